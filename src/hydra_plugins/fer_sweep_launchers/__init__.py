"""fer_sweep's Hydra launchers: ``packed`` (a sweep's Deep-Emotion jobs trained together) and
``joblib`` (the joblib plugin's launcher, made to stop its workers with it)."""
