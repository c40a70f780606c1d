"""An OpenCV window, when there is a display and OpenCV was built with GUI support.

``opencv-python-headless`` (the project's default dependency) has no windows; ``pip install
"fer_sweep[gui]"`` adds ``opencv-python``, which has them (uninstall ``opencv-python-headless`` if
both are installed and windows still fail: the two wheels share the ``cv2`` module).
"""

from __future__ import annotations

import os
import re
import sys

import cv2
import numpy as np

GUI_HINT = 'pip install "fer_sweep[gui]" for windows'


def gui_unavailable_reason() -> str | None:
    """Why no window can be shown here, or None when one can."""
    info = cv2.getBuildInformation()
    m = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    if m and m.group(1).upper() == "NONE":
        return f"this OpenCV ({cv2.__version__}) has no GUI support (opencv-python-headless?); {GUI_HINT}"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class Window:
    """A window showing frames; :meth:`show` returns False once the user presses q / Esc or closes it."""

    def __init__(self, title: str = "fer_sweep demo") -> None:
        self.title = title
        reason = gui_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise RuntimeError(f"OpenCV cannot open a window ({str(exc).strip().splitlines()[-1][:200]}); {GUI_HINT}") from None
        self.open = True
        self._sized = False

    def show(self, image: np.ndarray, wait_ms: int = 1, until_key: bool = False) -> bool:
        """Show ``image`` for ``wait_ms`` (or, with ``until_key``, until a key is pressed); False when
        the user quit (q / Esc / closed the window)."""
        if not self.open:
            return False
        if not self._sized:  # start at the frame's size (WINDOW_NORMAL windows stay resizable)
            cv2.resizeWindow(self.title, int(image.shape[1]), int(image.shape[0]))
            self._sized = True
        cv2.imshow(self.title, image)
        while True:
            key = cv2.waitKey(100 if until_key else max(1, int(wait_ms))) & 0xFF
            try:
                visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
            except cv2.error:
                visible = False
            if key in (ord("q"), ord("Q"), 27) or not visible:
                self.close()
                return False
            if not until_key or key != 0xFF:
                return True

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
