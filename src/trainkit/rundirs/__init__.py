"""Run directories: the library below the commands that makes, finds and reads them. No torch, no database: it reads
only what runs write.

- claim.py: a new run directory (unique even for two runs started in the same second), its lock, sweep job names;
- resume.py: the run to continue (`resume=DIR|CKPT|auto`) and whether its recipe still fits;
- read.py: one run's status and results (`read_run`), every run under a folder (`find_runs`);
- sweeps.py: a sweep's summary table, CSV and curves, and the plan of a stopped sweep;
- search.py: trainkit's Optuna search (its study lives in the sweep directory);
- curves.py: several runs' curves in one picture;
- frame.py: runs as a pandas DataFrame (`trainkit.runs(DIR)`).
"""
