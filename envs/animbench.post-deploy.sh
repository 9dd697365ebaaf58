#!/usr/bin/env bash
# Snakemake runs this inside the new envs/animbench.yaml environment, in the directory it runs
# in (the checkout): install the animbench package (the `animbench` command every rule runs)
# from that checkout, editable, without dependencies (the environment file has them all).
# By hand: conda run -p <env> bash envs/animbench.post-deploy.sh, from the checkout.
set -euo pipefail
checkout="${ANIMBENCH_CHECKOUT:-$PWD}"
if ! grep -q '^name = "animbench"' "$checkout/pyproject.toml" 2>/dev/null; then
	echo "animbench.post-deploy.sh: $checkout is not the animbench checkout (run Snakemake there, or set ANIMBENCH_CHECKOUT)" >&2
	exit 1
fi
python -m pip install --no-deps --no-build-isolation -e "$checkout"
python -m animbench.cli --help >/dev/null # the package and its imports load
