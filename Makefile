# The README's two commands. Both run the one set-up path first (tools/setup_env.sh): it creates .venv/
# and installs everything on a fresh machine, and returns in seconds when nothing changed.
PY := .venv/bin/python

.PHONY: setup demo test bench
setup:
	bash tools/setup_env.sh

# One torch thread: what the published results used; on 2 shared cores more threads ran slower.
demo: setup
	$(PY) tools/demo.py --threads 1 $(ARGS)

test: setup
	$(PY) -m pytest tests $(ARGS)

bench: setup
	$(PY) tools/benchmark.py $(ARGS)
