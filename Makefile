# The two commands: `make demo` (whole pipeline on the synthetic sample) and `make test`.
# Both create .venv and install the pinned requirements when they are missing or changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.dev-requirements-installed

# Demo sizes: small enough for a laptop-class CPU, large enough to learn the sample faces.
DEMO ?= demo
# The demo deletes and rewrites folders under $(DEMO): an empty value (or /) would put them at the
# root. Checked for the targets that use it.
ifneq ($(filter demo clean-demo,$(MAKECMDGOALS)),)
ifeq ($(patsubst %/,%,$(strip $(DEMO))),)
$(error DEMO is empty or /: give the demo's folder (default demo), e.g. make demo DEMO=demo)
endif
endif
DEMO_TRAIN ?= 1200
DEMO_TEST ?= 200
DEMO_RAFDB := $(DEMO)/RAF-DB
DEMO_RUN := $(DEMO)/out_training_fer/smallcnn
# Demo training (measured on the 2-core machine, docs/TRAINING.md "Demo settings"): --lpf 0 keeps
# the small CNN's plain stride-2 max-pools (--lpf 1, the default, pools at stride 1 over the full
# map and subsamples after), and 12 epochs with the rate halved every 6 reach 94.7 % clean test
# accuracy on the sample (20 epochs at lpf 1 reached 97 %). Together: about half the training CPU
# time of the earlier 20-epoch lpf-1 demo, still above the 90 % target. 64 px is the smallest
# input the networks accept; the in-model full_normalization stays (it is the benchmark's default).
DEMO_TRAIN_ARGS ?= --net smallcnn --input-size 64 --lpf 0 --epochs 12 --batch 32 --lr 0.02:0.5:6 --momentum --augmentation no --bn-recalibrate 8
export TF_CPP_MIN_LOG_LEVEL ?= 2
# BENCHMARK.md §4.9: a oneDNN crash when training 1x1 stride-2 convs over 8 channels on some CPUs.
export DNNL_MAX_CPU_ISA ?= AVX2
# Each demo stage prints its wall time (seconds).
STAGE_START = @mkdir -p $(DEMO) && date +%s > $(DEMO)/.stage_start
STAGE_END = @echo "   stage time: $$(( $$(date +%s) - $$(cat $(DEMO)/.stage_start) )) s"

.PHONY: demo test install clean-demo help

help:
	@echo "make demo   - run the whole pipeline on the synthetic sample dataset (installs what is missing)"
	@echo "make test   - run the test suite (installs what is missing)"

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(STAMP)

test: $(DEV_STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	@echo "== 1/7 synthetic sample RAF-DB tree ($(DEMO_TRAIN) train + $(DEMO_TEST) test faces)"
	$(STAGE_START)
	$(PY) rafdb_dataset.py sample --out $(DEMO_RAFDB) --train $(DEMO_TRAIN) --test $(DEMO_TEST) --force
	$(PY) rafdb_dataset.py summary --rafdb $(DEMO_RAFDB) --all-protocols
	$(STAGE_END)
	@echo "== 2/7 RAF-DB-C: 18 corruptions x 5 severities"
	$(STAGE_START)
	rm -rf $(DEMO)/corrupted_raf_dataset $(DEMO)/perturbed_raf_dataset
	$(PY) rafdb_aug_dataset.py export --rafdb $(DEMO_RAFDB) --out $(DEMO)/corrupted_raf_dataset
	$(PY) rafdb_aug_dataset.py verify --out $(DEMO)/corrupted_raf_dataset
	$(PY) rafdb_aug_dataset.py preview --rafdb $(DEMO_RAFDB) --out $(DEMO)/corruptions.png
	$(STAGE_END)
	@echo "== 3/7 RAF-DB-P: 10 perturbations x 30 frames"
	$(STAGE_START)
	$(PY) rafdb_perturb_dataset.py export --rafdb $(DEMO_RAFDB) --out $(DEMO)/perturbed_raf_dataset
	$(STAGE_END)
	@echo "== 4/7 train the small CNN"
	$(STAGE_START)
	rm -rf $(DEMO_RUN)
	$(PY) train_fer.py --rafdb $(DEMO_RAFDB) --dir $(DEMO_RUN) $(DEMO_TRAIN_ARGS)
	@$(PY) -c "import json; r = json.load(open('$(DEMO_RUN)/results.json')); ok = r['accuracy'] >= 0.9; \
		print(f\"demo target (>= 90 %): clean test accuracy {100 * r['accuracy']:.1f} % -> {'met' if ok else 'NOT MET'}\")"
	$(STAGE_END)
	@echo "== 5/7 robustness on RAF-DB-C"
	$(STAGE_START)
	$(PY) eval_corrupted_rafdb.py $(DEMO_RUN) --rafdb $(DEMO_RAFDB) --corrupted $(DEMO)/corrupted_raf_dataset \
		--json $(DEMO)/robustness.json --csv $(DEMO)/robustness.csv --plot $(DEMO)/robustness.png
	$(STAGE_END)
	@echo "== 6/7 stability on RAF-DB-P"
	$(STAGE_START)
	$(PY) eval_perturbed_rafdb.py $(DEMO_RUN) --rafdb $(DEMO_RAFDB) --perturbed $(DEMO)/perturbed_raf_dataset --topk 3 \
		> $(DEMO)/predictions.txt
	$(PY) eval_perturbed_rafdb2.py $(DEMO)/predictions.txt --json $(DEMO)/stability.json
	$(STAGE_END)
	@echo "== 7/7 comparison report (report.py: tables and figures of the trained model)"
	$(STAGE_START)
	$(PY) report.py $(DEMO)/robustness.json $(DEMO)/stability.json --out $(DEMO)/report
	$(STAGE_END)
	@echo "demo done: results in $(DEMO)/ (robustness.png, robustness.csv, stability.json, corruptions.png)"
	@echo "open the report: $(abspath $(DEMO))/report/report.html (also report.md, report.csv)"

clean-demo:
	rm -rf $(DEMO)
