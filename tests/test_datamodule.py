"""``seed=null`` in the data module: one seed drawn per run for the epoch orders and augmentation,
kept in checkpoints so a resumed run continues its own orders (synthetic FER2013 copies)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from fer_sweep.data.datamodule import FER2013DataModule
from test_data import _augment, write_folders


def _dm(tmp_path, seed):
    dm = FER2013DataModule(root=str(tmp_path / "fer"), cache_dir=str(tmp_path / "c"), augment=_augment("standard"), seed=seed, batch_size=8)
    dm.trainer = SimpleNamespace(training=True, current_epoch=0)  # the fields the module reads
    dm.setup("fit")
    return dm


def _epoch(dm, epoch: int) -> tuple[list[int], torch.Tensor]:
    """Labels in the order served, and the augmented images, of one training epoch."""
    dm.trainer.current_epoch = epoch
    batches = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    return torch.cat([y for _, y in batches]).tolist(), torch.cat([x for x, _ in batches])


def test_seed_none_is_accepted_where_it_used_to_raise():
    dm = FER2013DataModule(root="/x", seed=None)  # was: TypeError from int(None)
    assert dm.seed is None and dm.state_dict() == {}  # nothing drawn before it is needed


def test_seed_none_draws_one_seed_per_run_and_behaves_like_a_seed_within_it(tmp_path):
    write_folders(tmp_path / "fer")
    a, b = _dm(tmp_path, None), _dm(tmp_path, None)
    assert a.seed is None and isinstance(a.run_seed, int) and a.run_seed != b.run_seed  # 2**-32 to collide
    (order0, x0), (order0_again, _), (order1, _) = _epoch(a, 0), _epoch(a, 0), _epoch(a, 1)
    assert order0 == order0_again  # fixed within the run (augmentation too: see the resume test)...
    assert order0 != order1  # ...and a new order each epoch
    assert sorted(order0) == sorted(order1)
    assert _epoch(b, 0)[0] != order0 or not torch.equal(_epoch(b, 0)[1], x0)  # another run, other draws


def test_drawn_seed_goes_into_checkpoints_and_a_resumed_run_continues_it(tmp_path):
    write_folders(tmp_path / "fer")
    first = _dm(tmp_path, None)
    state = first.state_dict()
    assert state == {"drawn_seed": first.run_seed}
    resumed = _dm(tmp_path, None)  # draws its own at setup, then Lightning restores the checkpoint's
    resumed.load_state_dict(state)
    (o1, x1), (o2, x2) = _epoch(first, 2), _epoch(resumed, 2)
    assert resumed.run_seed == first.run_seed and o1 == o2 and torch.equal(x1, x2)
    seeded = _dm(tmp_path, 5)
    assert seeded.state_dict() == {} and seeded.run_seed == 5  # seeded checkpoints are unchanged
    seeded.load_state_dict(state)
    assert seeded.run_seed == 5  # the configured seed wins over a checkpoint's drawn one


def test_split_sources_say_what_val_and_test_are(tmp_path):
    """Recorded by every run (results.json ``splits``) for the report's labels: an unprefixed copy
    validates on a carve of Training and tests on all of test/, which is not PrivateTest."""
    from fer_sweep.data.splits import UNSPLIT_TEST_WORDS

    for prefixed, expected in ((True, {"val": "PublicTest", "test": "PrivateTest"}),
                               (False, {"val": "10% of Training (the copy has no PublicTest)", "test": UNSPLIT_TEST_WORDS})):
        root = write_folders(tmp_path / f"fer{prefixed}", prefixed=prefixed)
        dm = FER2013DataModule(root=str(root), cache_dir=str(tmp_path / f"c{prefixed}"), augment=_augment("none"))
        dm.setup("fit")
        assert dm.split_sources == expected
    study = FER2013DataModule(root=str(tmp_path / "ferTrue"), cache_dir=str(tmp_path / "cTrue"), augment=_augment("none"), split="study", subset=0.5)
    study.setup("fit")
    assert study.split_sources == {"val": "30% of Training (data.split=study), a stratified 50% subset (data.subset=0.5)",
                                   "test": "PrivateTest, a stratified 50% subset (data.subset=0.5)"}


def test_ddp_ranks_draw_their_own_augmentation_and_dropout_and_rank_0_the_single_process_seeds():
    """Only the streams: the shuffle (stream 0) is shared, which tests/test_ddp.py checks end to end."""
    from fer_sweep.data.loader import epoch_seed
    from fer_sweep.models.deep_emotion import DeepEmotion
    from fer_sweep.models.module import FERClassifier

    seeds = {}
    for rank in (0, 1):
        dm = FER2013DataModule(root="/x", seed=5)
        dm.trainer = SimpleNamespace(training=True, current_epoch=3, global_rank=rank)
        module = FERClassifier(DeepEmotion(), optimizer=torch.optim.Adam, seed=5)
        trainer = SimpleNamespace(current_epoch=3, global_rank=rank, optimizers=[], world_size=2)
        module._trainer = trainer
        module.on_train_epoch_start()
        seeds[rank] = (dm._generator(torch.device("cpu")).initial_seed(), torch.initial_seed())
    assert seeds[0] == (epoch_seed(5, 3, 1), epoch_seed(5, 3, 2))
    assert seeds[1][0] not in seeds[0] and seeds[1][1] not in seeds[0] and seeds[1][0] != seeds[1][1]
