"""The daemon (`imgrank watch`), split by responsibility:

- roots.py: the observer, which roots are online, and what a filesystem event means (a change);
- debounce.py: when a written file is complete, and when a burst of deletions ends;
- deletions.py: which deletions are the owner's judgement (a `delete` label) and which are not;
- retrain.py: the low-priority `imgrank train` child (torch never enters the daemon);
- heartbeat.py: the beat in the `daemon` table (store/heartbeat.py), which `imgrank status` reads
  without importing watchdog;
- work.py: each step of work (catch up, index what settled, reorder), logged by name;
- loop.py: the scheduler (`Watcher`): which step runs when;
- entry.py: `run_watch`, what `imgrank watch` runs (signals, roots).

Nothing is imported here, so `imgrank status` can read the heartbeat cheaply.
"""
