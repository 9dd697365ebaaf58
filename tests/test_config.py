"""animbench.config: loading, merging, defaults, one-line errors naming the key."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from animbench.config import (  # noqa: E402
    config_hash,
    load_config,
    merge,
    metrics_for,
    paper_table_runs,
    paper_table_spec,
    table2_spec,
    validate_config,
)
from animbench.errors import ConfigError  # noqa: E402


def minimal() -> dict:
    return {
        "benchmark": {"datasets": ["toy"], "methods": ["fomm"]},
        "datasets": {"toy": {"source": "synthetic", "kind": "face"}},
        "methods": {"fomm": {"presets": {"toy": "fomm-synthetic"}}},
    }


@pytest.fixture(scope="module")
def shipped() -> dict:
    with open(REPO / "config.yaml") as fh:
        return yaml.safe_load(fh)


def error_of(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_filled():
    config = validate_config(minimal())
    assert config["results"] == "results"
    assert config["cache"] == "resources/cache"
    assert config["device"] == "auto"
    assert config["seed"] == 0
    assert config["benchmark"]["baselines"] == ["source-copy"]
    toy = config["datasets"]["toy"]
    assert (toy["seed"], toy["num_train"], toy["num_test"], toy["frames"], toy["size"]) == (
        0,
        24,
        6,
        32,
        64,
    )
    assert (toy["keypoints"], toy["identity"], toy["mkr"], toy["paper_name"]) == (
        "none",
        "none",
        False,
        None,
    )
    assert config["methods"]["fomm"]["overrides"] == {}
    assert config["resources"]["train"] == {
        "gpu": 1,
        "mem_mb": 64000,
        "runtime": 4320,
        "threads": 8,
    }
    assert config["resources"]["table"]["gpu"] == 0


def test_validate_does_not_mutate_its_input():
    config = minimal()
    before = copy.deepcopy(config)
    validate_config(config)
    assert config == before


def test_defaults_inside_partial_resources():
    config = minimal()
    config["resources"] = {"train": {"gpu": 0}}
    out = validate_config(config)
    assert out["resources"]["train"]["gpu"] == 0
    assert out["resources"]["train"]["threads"] == 1
    assert out["resources"]["reconstruct"]["gpu"] == 1


def test_real_dataset_defaults():
    config = minimal()
    config["datasets"]["web"] = {"source": "youtube", "metadata": {"url": "https://x/y.csv"}}
    out = validate_config(config)
    assert out["datasets"]["web"]["resolution"] == 256
    assert out["datasets"]["web"]["metadata"]["sha256"] is None
    assert "num_train" not in out["datasets"]["web"]


@pytest.mark.parametrize(
    "path, expected",
    [
        (("foo",), "config key 'foo': unknown key"),
        (("benchmark", "foo"), "config key 'benchmark.foo': unknown key"),
        (("datasets", "toy", "colour"), "config key 'datasets.toy.colour': unknown key"),
        (("methods", "fomm", "epochs"), "config key 'methods.fomm.epochs': unknown key"),
        (("resources", "train", "gpus"), "config key 'resources.train.gpus': unknown key"),
        (("resources", "gpu_rule"), "config key 'resources.gpu_rule': unknown key"),
    ],
)
def test_unknown_keys_are_named(path, expected):
    config = minimal()
    config.setdefault("resources", {}).setdefault("train", {})
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = 1
    assert error_of(config) == expected


def test_unknown_key_in_pinned_file():
    config = minimal()
    config["datasets"]["web"] = {
        "source": "archive",
        "archive": {"url": "https://x/y.zip", "md5": "abc"},
    }
    assert error_of(config) == "config key 'datasets.web.archive.md5': unknown key"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("seed",), "x", "config key 'seed': 'x' is not of type 'integer'"),
        (("seed",), -1, "config key 'seed': -1 is less than the minimum of 0"),
        (("device",), "tpu", "config key 'device': 'tpu' does not match"),
        (
            ("datasets", "toy", "size"),
            "big",
            "config key 'datasets.toy.size': 'big' is not of type",
        ),
        (("datasets", "toy", "kind"), "cat", "config key 'datasets.toy.kind': 'cat' is not one of"),
        (("datasets", "toy", "mkr"), "yes", "config key 'datasets.toy.mkr': 'yes' is not of type"),
        (
            ("datasets", "toy", "source"),
            "ftp",
            "config key 'datasets.toy.source': 'ftp' is not one",
        ),
        (("benchmark", "datasets"), "toy", "config key 'benchmark.datasets': 'toy' is not of type"),
        (("benchmark", "baselines"), ["copy"], "config key 'benchmark.baselines[0]': 'copy'"),
    ],
)
def test_bad_values_are_named(path, value, expected):
    config = minimal()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert error_of(config).startswith(expected)


def test_bad_resolution_names_the_dataset_key(shipped):
    config = merge(shipped, {"datasets": {"vox": {"resolution": "abc"}}})
    assert error_of(config) == (
        "config key 'datasets.vox.resolution': 'abc' is not of type 'integer'"
    )


def test_missing_required_key_is_named():
    config = minimal()
    del config["datasets"]["toy"]["kind"]
    assert error_of(config) == "config key 'datasets.toy.kind': required key is missing"
    config = minimal()
    del config["benchmark"]
    assert error_of(config) == "config key 'benchmark': required key is missing"


def test_bad_names_are_named():
    config = minimal()
    config["datasets"]["Bad_Name"] = {"source": "synthetic", "kind": "face"}
    assert error_of(config).startswith("config key 'datasets.Bad_Name': invalid name")


def test_cross_reference_unknown_benchmark_dataset():
    config = minimal()
    config["benchmark"]["datasets"] = ["toy", "nope"]
    assert error_of(config).startswith("config key 'benchmark.datasets[1]': unknown dataset 'nope'")


def test_cross_reference_unknown_benchmark_method():
    config = minimal()
    config["benchmark"]["methods"] = ["fomm", "mraa"]
    assert error_of(config).startswith("config key 'benchmark.methods[1]': unknown method 'mraa'")


def test_cross_reference_missing_preset():
    config = minimal()
    config["datasets"]["toy2"] = {"source": "synthetic", "kind": "body"}
    config["benchmark"]["datasets"] = ["toy", "toy2"]
    assert error_of(config) == (
        "config key 'methods.fomm.presets': no preset for benchmark dataset 'toy2'"
    )


def test_cross_reference_preset_for_unknown_dataset():
    config = minimal()
    config["methods"]["fomm"]["presets"]["ghost"] = "fomm-ghost"
    assert error_of(config) == "config key 'methods.fomm.presets.ghost': unknown dataset 'ghost'"


def test_unknown_preset_is_named_with_the_nearest():
    config = minimal()
    config["methods"]["fomm"]["presets"]["toy"] = "fomm-vox265"
    assert error_of(config).startswith(
        "config key 'methods.fomm.presets.toy': unknown preset 'fomm-vox265' "
        "(did you mean fomm-vox256"
    )
    # an entry outside the benchmark is checked too (paper tables and later runs use it)
    config = minimal()
    config["methods"]["extra"] = {"presets": {"toy": "no-such-preset"}}
    assert (
        error_of(config)
        == "config key 'methods.extra.presets.toy': unknown preset 'no-such-preset'"
    )


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"train_params": {"num_epocs": 3}},
            "config key 'methods.fomm.overrides.train_params.num_epocs': unknown key for a fomm "
            "preset (did you mean num_epochs, num_repeats, num_workers?)",
        ),
        (
            {"train_params": {"loss_weights": {"perceptal": [1]}}},
            "config key 'methods.fomm.overrides.train_params.loss_weights.perceptal': unknown key "
            "for a fomm preset (did you mean perceptual?)",
        ),
        (
            {"zzz": 1},
            "config key 'methods.fomm.overrides.zzz': unknown key for a fomm preset (valid: "
            "dataset_params, model, model_params, note, train_params)",
        ),
        (  # FOMM has no second (AVD) stage, so no AVD keys even where they are optional
            {"train_avd_params": {"max_steps": 1}},
            "config key 'methods.fomm.overrides.train_avd_params': unknown key for a fomm preset "
            "(did you mean train_params?)",
        ),
    ],
)
def test_unknown_override_keys_are_named(overrides, expected):
    config = minimal()
    config["methods"]["fomm"]["overrides"] = overrides
    assert error_of(config) == expected


@pytest.mark.parametrize(
    "method, preset, overrides",
    [
        # keys of the preset, and of another preset of the same model (FOMM mgif's)
        ("fomm", "fomm-synthetic", {"train_params": {"num_epochs": 3, "max_steps": 2}}),
        ("fomm", "fomm-synthetic",
         {"model_params": {"kp_detector_params": {"single_jacobian_map": True}}}),
        # optional keys no preset holds (OPTIONAL_OVERRIDES), clip_grad_norm by network name
        ("fomm", "fomm-synthetic", {"train_params": {"weight_decay": 0.1, "num_workers": 2,
                                                      "clip_grad_norm": {"kp_detector": 1.0}}}),
        ("fomm", "fomm-synthetic",
         {"dataset_params": {"augmentation_params": {"rotation_param": {"degrees": 5}}}}),
        ("mraa", "mraa-synthetic", {"train_avd_params": {"max_steps": 2, "num_repeats": 1}}),
        ("tpsmm", "tpsmm-synthetic", {"train_params": {"bg_start": 0}}),
        # a whole section replaced by a non-mapping value
        ("mraa", "mraa-synthetic", {"train_avd_params": None}),
    ],
)  # fmt: skip
def test_valid_overrides_pass(method, preset, overrides):
    config = minimal()
    config["benchmark"]["methods"] = [method]
    config["methods"] = {method: {"presets": {"toy": preset}, "overrides": overrides}}
    assert validate_config(config)["methods"][method]["overrides"] == overrides


def test_augmentation_keys_match_the_dataset():
    """config.py lists the augmentation keys without importing the dataset (torch): the lists
    must agree."""
    from animbench.config import AUGMENTATION_KEYS
    from animbench.data.datasets import _KNOWN_PARAMS

    assert {k: set(v) for k, v in AUGMENTATION_KEYS.items()} == _KNOWN_PARAMS


def test_baseline_cannot_be_a_trained_method():
    config = minimal()
    config["methods"]["source-copy"] = {"presets": {}}
    assert error_of(config).startswith("config key 'methods.source-copy':")


def test_shipped_config_validates(shipped):
    config = validate_config(shipped)
    assert config["benchmark"]["datasets"] == ["vox", "taichi", "ted", "mgif"]
    assert config["benchmark"]["methods"] == ["fomm", "mraa", "mtia"]
    for name in ("vox", "taichi", "ted"):
        assert len(config["datasets"][name]["metadata"]["sha256"]) == 64


def test_ci_benchmark_validates_merged_over_shipped():
    config = load_config([REPO / "config.yaml", REPO / "profiles" / "ci" / "benchmark.yaml"])
    assert config["benchmark"]["datasets"] == ["synthetic-face", "synthetic-body"]  # lists replace
    assert config["benchmark"]["methods"] == ["fomm", "mraa", "mtia", "tpsmm"]
    assert config["device"] == "cpu"
    assert config["resources"]["train"]["gpu"] == 0
    assert "vox" in config["datasets"]  # dicts merge


def test_merge_semantics():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = merge(base, {"a": {"c": [3]}, "e": 2})
    assert out == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_load_config_errors_are_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n b: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config([broken])
    assert "\n" not in str(info.value) and "broken.yaml" in str(info.value)
    with pytest.raises(ConfigError):
        load_config([tmp_path / "missing.yaml"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError):
        load_config([listed])


def test_table2_spec_and_hash(shipped):
    config = validate_config(shipped)
    spec = table2_spec(config)
    assert spec["datasets"]["vox"] == {"paper_name": "vox", "metrics": ["L1", "AKD", "AED"]}
    assert spec["datasets"]["taichi"]["metrics"] == ["L1", "AKD", "MKR", "AED"]
    assert spec["datasets"]["mgif"]["metrics"] == ["L1"]
    assert spec["methods"] == ["fomm", "mraa", "mtia"]
    assert spec["baselines"] == ["source-copy"]
    assert spec["config_hash"] == config_hash(config)
    assert config_hash(config) == config_hash(copy.deepcopy(config))
    assert config_hash(config) != config_hash(merge(config, {"seed": 1}))
    assert metrics_for({"keypoints": "none", "mkr": True, "identity": "none"}) == ["L1"]


# --------------------------------------------------------------------------- paper tables


def with_paper_table(**changes) -> dict:
    config = minimal()
    config["methods"]["cpabmm-cpab"] = {"name": "+CPAB", "presets": {"toy": "cpabmm-synthetic"}}
    table = {
        "paper": "cpabmm_aaai2024",
        "table": "table2",
        "datasets": ["toy"],
        "rows": {
            "X2Face": {"method": None, "note": "not in animbench"},
            "FOMM": {"method": "fomm"},
            "+CPAB": {"method": "cpabmm-cpab"},
        },
    }
    config["paper_tables"] = {"t": {**table, **changes}}
    return config


def test_paper_table_validates_and_defaults_to_none():
    assert validate_config(minimal())["paper_tables"] == {}
    config = validate_config(with_paper_table())
    assert config["paper_tables"]["t"]["rows"]["FOMM"] == {"method": "fomm"}
    assert config["methods"]["cpabmm-cpab"]["name"] == "+CPAB"


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"rows": {"FOMM": {"method": "nope"}}},
            "config key 'paper_tables.t.rows.FOMM.method': unknown methods entry 'nope' "
            "(defined: cpabmm-cpab, fomm)",
        ),
        (
            {"datasets": ["toy", "nope"]},
            "config key 'paper_tables.t.datasets[1]': unknown dataset 'nope' (defined: toy)",
        ),
        (
            {"rows": {"X2Face": {"method": None}}},
            "config key 'paper_tables.t.rows.X2Face.note': required key is missing",
        ),
        (
            {"rows": {"FOMM": {"method": "fomm", "preset": "x"}}},
            "config key 'paper_tables.t.rows.FOMM.preset': unknown key",
        ),
        (
            {"table": "table9"},
            "config key 'paper_tables.t.table': paper_tables.csv has no table 'table9' of paper "
            "'cpabmm_aaai2024'",
        ),
        ({"datasets": []}, "config key 'paper_tables.t.datasets': [] should be non-empty"),
    ],
)
def test_bad_paper_tables_are_named(changes, expected):
    assert error_of(with_paper_table(**changes)) == expected


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"unavailable_datasets": {"nemo": "not here"}},
            "config key 'paper_tables.t.unavailable_datasets.nemo': cpabmm_aaai2024 table2 "
            "reports nothing on 'nemo' (it reports: taichi)",
        ),
        (
            {"unavailable_datasets": {"taichi": ""}},
            "config key 'paper_tables.t.unavailable_datasets.taichi': '' should be non-empty",
        ),
        (
            {"param_networks": ["Kp"]},
            "config key 'paper_tables.t.param_networks[0]': 'Kp' does not match '^[a-z][a-z0-9_]*$'",
        ),
    ],
)
def test_bad_paper_table_extras_are_named(changes, expected):
    assert error_of(with_paper_table(**changes)) == expected


def test_unavailable_dataset_must_not_be_a_table_dataset():
    config = with_paper_table(unavailable_datasets={"taichi": "gone"})
    config["datasets"]["toy"]["paper_name"] = "taichi"
    assert error_of(config) == (
        "config key 'paper_tables.t.unavailable_datasets.taichi': 'taichi' is the paper_name "
        "of one of the table's datasets"
    )


def test_paper_table_spec_extras():
    config = validate_config(with_paper_table())
    spec = paper_table_spec(config, "t")
    assert spec["unavailable"] == {} and spec["param_networks"] == []
    assert "overrides" not in spec["rows"][1]["entry"]
    config = with_paper_table(unavailable_datasets={"taichi": "gone"}, param_networks=["kp"])
    overrides = {"model_params": {"common_params": {"num_kp": 5}}}
    config["methods"]["fomm"]["overrides"] = overrides
    config = validate_config(config)
    spec = paper_table_spec(config, "t")
    assert spec["unavailable"] == {"taichi": "gone"} and spec["param_networks"] == ["kp"]
    assert spec["rows"][1]["entry"]["overrides"] == overrides
    assert spec["rows"][2]["entry"]["overrides"] == {}


def test_shipped_mtia_and_fomm_tables(shipped):
    """MTIA Tables 4-6 and FOMM Tables 1 and 3: the paper's rows -> methods entries whose
    presets are the papers' ablation switches; the paper's default row is the benchmark's run."""
    config = validate_config(shipped)
    tables, methods = config["paper_tables"], config["methods"]
    expected = {
        "mtia_table4": {"MTIA w/o PE": "mtia-taichi256-nope", "MTIA w PE": "mtia-taichi256"},
        "mtia_table5": {
            "MTIA Stem": "mtia-taichi256-stem",
            "MTIA HR-W32": "mtia-taichi256",
            "MTIA HR-W48": "mtia-taichi256-hrw48",
        },
        "mtia_table6": {
            "MTIA layers=4": "mtia-taichi256-4layers",
            "MTIA layers=8": "mtia-taichi256-8layers",
            "MTIA layers=12": "mtia-taichi256",
        },
        "fomm_table1": {
            "Baseline": "fomm-taichi256-baseline",
            "Pyr.": "fomm-taichi256-pyr",
            "Pyr.+O": "fomm-taichi256-monkeynet",  # = fomm-taichi256-pyr-occ
            "Jac. w/o Eq.(12)": "fomm-taichi256-jac-no-eq",
            "Full": "fomm-taichi256",  # = fomm-taichi256-full
        },
    }
    for name, rows in expected.items():
        table = tables[name]
        assert table["datasets"] == ["taichi"] and table["table"] == name[-6:]
        presets = {
            label: methods[r["method"]]["presets"]["taichi"] for label, r in table["rows"].items()
        }
        assert presets == rows
        for label, row in table["rows"].items():  # a variant is named by its paper row
            if methods[row["method"]].get("name"):
                assert methods[row["method"]]["name"] in (label, "Monkey-Net")
    from animbench.models import registry

    kp = registry.get_preset("mtia-taichi256")["model_params"]["kp_detector_params"]
    assert (kp["position_encoding"], kp["backbone"], kp["depth"]) == (True, "hrnet_w32", 12)
    assert tables["mtia_table5"]["param_networks"] == ["kp_detector"]
    assert tables["mtia_table4"]["param_networks"] == []

    fomm3 = tables["fomm_table3"]
    assert (fomm3["paper"], fomm3["table"], fomm3["datasets"]) == (
        "fomm_neurips2019",
        "table3",
        ["taichi", "vox"],
    )
    assert list(fomm3["unavailable_datasets"]) == ["nemo", "bair"]
    assert {label: r["method"] for label, r in fomm3["rows"].items()} == {
        "X2Face": None,
        "Monkey-Net": "monkeynet",
        "FOMM": "fomm",
    }
    assert paper_table_runs(config, "fomm_table3") == [
        ("taichi", "monkeynet"),
        ("taichi", "fomm"),
        ("vox", "monkeynet"),
        ("vox", "fomm"),
    ]
    spec = paper_table_spec(config, "mtia_table5")
    assert spec["param_networks"] == ["kp_detector"]
    assert spec["rows"][0]["entry"] == {
        "name": "MTIA Stem",
        "presets": {"taichi": "mtia-taichi256-stem"},
        "overrides": {},
    }


def test_paper_table_names():
    config = with_paper_table()
    config["paper_tables"]["table2"] = config["paper_tables"].pop("t")
    assert error_of(config).startswith("config key 'paper_tables.table2': 'table2' is reserved")
    config["paper_tables"]["Bad"] = config["paper_tables"].pop("table2")
    assert error_of(config) == (
        "config key 'paper_tables.Bad': invalid name: use lower-case letters, digits and single "
        "dashes or underscores"
    )


def test_paper_table_row_without_preset_for_its_datasets():
    config = with_paper_table()
    config["datasets"]["toy2"] = {"source": "synthetic", "kind": "body"}
    config["paper_tables"]["t"]["datasets"] = ["toy2"]
    config["paper_tables"]["t"]["rows"] = {"FOMM": {"method": "fomm"}}
    assert error_of(config) == (
        "config key 'paper_tables.t.rows.FOMM.method': methods entry 'fomm' has no preset for "
        "any of the table's datasets"
    )


def test_shipped_cpab_tables(shipped):
    config = validate_config(shipped)
    t1, t2 = config["paper_tables"]["cpab_table1"], config["paper_tables"]["cpab_table2"]
    assert (t1["paper"], t1["table"], t1["datasets"]) == (
        "cpabmm_aaai2024",
        "table1",
        ["taichi", "ted", "vox", "mgif"],
    )
    assert {label: r["method"] for label, r in t1["rows"].items()} == {
        "X2Face": None,
        "Monkey-Net": "monkeynet",
        "FOMM": "fomm",
        "MRAA": "mraa",
        "TPSMM": "tpsmm",
        "CPABMM": "cpabmm",
    }
    assert t2["datasets"] == ["taichi"]
    for label, row in t2["rows"].items():
        entry = config["methods"][row["method"]]
        if label.startswith("+"):  # the ablation variants are named by their paper row
            assert entry["name"] == label
            assert entry["presets"]["taichi"].startswith("cpabmm-taichi256-cpab")

    runs = paper_table_runs(config, "cpab_table1")
    assert ("vox", "monkeynet") in runs and ("ted", "monkeynet") not in runs
    assert len(runs) == 4 * 4 + 2  # FOMM, MRAA, TPSMM, CPABMM everywhere; Monkey-Net on 2
    assert paper_table_runs(config, "cpab_table2") == [
        ("taichi", m)
        for m in (
            "tpsmm",
            "cpabmm-cpab",
            "cpabmm-cpab-global",
            "cpabmm-cpab-global-ks",
            "cpabmm-cpab-global-struc",
            "cpabmm",
        )
    ]

    spec = paper_table_spec(config, "cpab_table1")
    assert spec["datasets"]["mgif"] == {"paper_name": "mgif", "metrics": ["L1"]}
    assert spec["rows"][0] == {
        "label": "X2Face",
        "method": None,
        "note": t1["rows"]["X2Face"]["note"],
        "entry": None,
    }
    monkeynet = spec["rows"][1]["entry"]
    assert monkeynet == {
        "name": "Monkey-Net",
        "presets": {"taichi": "fomm-taichi256-monkeynet", "vox": "fomm-vox256-monkeynet"},
    }
    assert spec["config_hash"] == config_hash(config)
    assert table2_spec(config)["entries"]["fomm"]["presets"]["vox"] == "fomm-vox256"
