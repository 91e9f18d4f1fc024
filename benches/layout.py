"""Where a recur run's files are, for the bench scripts."""

import os


def run_dir(path):
    """A run's folder: an output folder's latest run (recur's layout of
    many runs, OUT/as_of=DATE/ named by OUT/latest), or the folder itself
    (an earlier recur's single run)."""
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest):
        return os.path.join(path, open(latest).read().strip())
    return path
