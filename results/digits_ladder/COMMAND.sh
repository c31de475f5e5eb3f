# the command (2 shared CPU cores, ~10 other processes; wall 29 min 52 s)
cd /tmp/h19study && PYTHONPATH=<worktree> OMP_NUM_THREADS=1 nice -n 10 python -m xairobust study digits_ladder --root /tmp/h19study/root --workers 2 --quiet
