"""Named models and presets (paper configurations per model and dataset).

Filled in by the model files; see models/fomm.py. `build(preset)` returns an Animator whose
`networks` dict maps the authors' checkpoint keys (generator, kp_detector, ...) to modules.
"""

from __future__ import annotations

# method -> human name used in the papers' tables
METHOD_NAMES = {
    "source-copy": "Source copy",
    "fomm": "FOMM",
    "mraa": "MRAA",
    "mtia": "MTIA",
    "tpsmm": "TPSMM",
    "cpabmm": "CPABMM",
}
