#!/usr/bin/env bash
# Runs inside the activated pose environment (Snakemake does this after deploying
# envs/pose.yaml; by hand: conda run -p resources/envs/pose bash envs/pose.post-deploy.sh).
# openpifpaf 0.13.11 pins torch==1.13.1: install it without its dependencies and without build
# isolation, so its C++ extension is compiled against this environment's torch 2.5.1. Then
# check that the extension imports and write the stamp animbench's openpifpaf backend checks.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation --no-cache-dir "openpifpaf==0.13.11"
python - <<'PY'
import glob, json, os, sys
import torch, openpifpaf  # importing openpifpaf loads its C++ extension (_cpp.so)
torch.classes.openpifpaf_decoder.CifCaf  # the decoder class the extension registers
package = os.path.dirname(openpifpaf.__file__)
versions = {"python": sys.version.split()[0], "torch": torch.__version__,
            "openpifpaf": openpifpaf.__version__, "cpp": glob.glob(f"{package}/_cpp*")}
with open(os.path.join(sys.prefix, ".animbench-ready"), "w") as stamp:
    json.dump({"versions": versions, "builder": "envs/pose.post-deploy.sh"}, stamp, indent=1)
print("pose environment ready:", versions)
PY
