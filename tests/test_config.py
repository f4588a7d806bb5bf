"""The one config: defaults, TOML, command-line overrides and every validation error."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench import runner
from bench.cli import FIELDS, build_parser, fields_of, load_toml
from bench.config import COMMAND_FIELDS, PRESETS, SETTINGS, Config, GpuCheckSettings, GradflowSettings, \
    HessianSettings
from bench.errors import ConfigError, UserError
from conftest import assert_one_line_error

MODULES = {"sweep": "bench.sweep.__main__", "data": "bench.data.__main__", "claims": "bench.claims.__main__"}
NEEDED = {"sweep": ["--grid", "lr=0.1,0.2"], "check": ["x"], "op_ratios": ["x.json"]}  # required arguments


def command(name: str) -> runner.Command:
    return importlib.import_module(MODULES.get(name, f"bench.{name}")).COMMAND


def parse(argv: list[str], name: str = "compare") -> runner.Context:
    return runner.parse(command(name), [*NEEDED.get(name, []), *argv])


def parse_config(argv: list[str], name: str = "compare") -> Config:
    return parse(argv, name).config


def parser_of(name: str):
    c = command(name)
    return build_parser(name, c.about, c.preset() if c.preset else PRESETS.get(name, {}), folder=c.folder)


def test_defaults_are_the_reference_setup():
    c = Config()
    assert c.hidden_dims == [128] and c.activation == "elu" and c.alpha == 1.0
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs) == (0.1, 0.0, 0.0, 128, 10)
    assert c.seeds == [42] and c.val_size == 5000 and c.dtype == "float32"
    assert c.mean == [0.491, 0.482, 0.447] and c.std == [0.247, 0.243, 0.262]
    assert c.n_train == 45_000


def test_list_defaults_are_not_shared():
    a, b = Config(), Config()
    a.hidden_dims.append(5)
    assert b.hidden_dims == [128]


def test_flags_override_toml_which_overrides_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.05\nhidden_dims = [256, 64]\nepochs = 3\nmomentum = 0\n')
    c = parse_config(["--config", str(f), "--epochs", "4", "--seeds", "1", "2,3"])
    assert c.lr == 0.05 and c.hidden_dims == [256, 64] and c.epochs == 4 and c.seeds == [1, 2, 3]
    assert isinstance(c.momentum, float)
    assert c.batch_size == Config().batch_size


def test_every_field_has_help_and_is_used_by_a_command():
    used = {f for fields in COMMAND_FIELDS.values() for f in fields}
    for f in dataclasses.fields(Config):
        assert f.metadata["help"]
        assert f.name in used, f.name
    for cls in SETTINGS.values():
        assert all(f.metadata["help"] for f in dataclasses.fields(cls)), cls
    for name, values in PRESETS.items():
        own = {f.name for cls in SETTINGS.values() for f in dataclasses.fields(cls)}
        assert set(values) <= set(FIELDS) | own, name


COMMANDS = sorted(COMMAND_FIELDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_the_commands_flags_each_default_once_and_every_choice(name):
    """--help shows what the command reads and nothing else: no other command's settings, no GPU flag
    where the command cannot use one."""
    text = " ".join(parser_of(name).format_help().split())
    own = fields_of(name)
    for other in {f.name for cls in SETTINGS.values() for f in dataclasses.fields(cls)} | set(FIELDS):
        flag = "--" + other.replace("_", "-")
        if other in own and not {"positional", "rest"} & set(own[other][1].metadata):
            assert flag in text, flag
        elif other not in own and other != "out":  # --out: the results folder, or bench.check's own
            assert f"{flag} " not in text and f"{flag}," not in text, (name, flag)
    shown = [n for n, (_, f) in own.items() if not {"positional", "rest", "whole"} & set(f.metadata)]
    assert text.count("(default:") == len(shown)
    if "epochs" in own:
        assert f"training epochs (default: {parse_config([], name).epochs})" in text
    for n, (_, f) in own.items():
        for choice in f.metadata.get("choices", ()):
            assert choice in text, (name, n, choice)
    if name not in ("compare", "sweep", "epoch_ratio", "gpu_check"):
        assert "--cuda-graph" not in text and "--tf32" not in text and "--torch-compile" not in text


@pytest.mark.parametrize("name", [c for c in COMMANDS if "epochs" in COMMAND_FIELDS[c]])
def test_toml_epochs_9_gives_9_epochs_in_every_command(tmp_path, name):
    f = tmp_path / "c.toml"
    f.write_text("epochs = 9\n")
    assert parse_config(["--config", str(f)], name).epochs == 9
    c = command(name)
    preset = c.preset() if c.preset else PRESETS.get(name, {})
    assert parse_config([], name).epochs == preset.get("epochs", Config().epochs)
    assert parse_config(["--config", str(f), "--epochs", "3"], name).epochs == 3


def test_gpu_checks_cpu_pass_is_a_preset_that_flags_and_toml_override(tmp_path, monkeypatch):
    """Without a GPU the CPU pass is the preset, and --epochs 9 (or epochs = 9 in TOML) gives 9."""
    from bench import gpu_check

    monkeypatch.setattr(gpu_check, "resolve", lambda names, skip_unavailable: ([], []))  # no GPU here
    assert parse_config([], "gpu_check").epochs == PRESETS["gpu_check_cpu"]["epochs"]
    assert parse_config(["--epochs", "9"], "gpu_check").epochs == 9
    f = tmp_path / "c.toml"
    f.write_text("epochs = 9\ntrain_subset = 512\n")
    ctx = parse(["--config", str(f)], "gpu_check")
    assert (ctx.config.epochs, ctx.config.train_subset, ctx.settings.gpu_variants) == (9, 512, ["eager"])


def test_a_commands_own_settings_come_from_its_preset_toml_and_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("k = 3\neps = 1e-4\nepochs = 2\n")
    ctx = parse(["--config", str(f), "--k", "4"], "hessian")
    assert (ctx.settings.k, ctx.settings.eps, ctx.settings.batch_examples, ctx.config.epochs) == (4, 1e-4, 1000, 2)
    assert parse([], "gradflow").settings == GradflowSettings()
    assert parse(["--seed", "3", "--jobs", "1"], "check").settings.seed == 3


def test_precedence_is_preset_then_toml_then_flags(tmp_path):
    assert parse_config([], "hessian").hidden_dims == [32]  # the preset
    f = tmp_path / "c.toml"
    f.write_text("hidden_dims = [16]\ntrain_subset = 5000\n")
    c = parse_config(["--config", str(f), "--train-subset", "4000"], "hessian")
    assert (c.hidden_dims, c.train_subset, c.epochs) == ([16], 4000, 5)


def test_a_toml_key_of_another_command_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("lockstep = true\n")
    with pytest.raises(UserError, match="'lockstep' is not a setting of python -m bench.gradflow"):
        parse_config(["--config", str(f)], "gradflow")


def test_optional_flags_take_none():
    assert parse_config(["--train-subset", "none"], "epoch_ratio").train_subset is None
    assert parse_config(["--backends", "none"]).backends is None


@pytest.mark.parametrize("kwargs, field", [
    ({"lr": 0.0}, "lr"), ({"lr": -1.0}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 45_001}, "batch_size"),
    ({"hidden_dims": []}, "hidden_dims"), ({"hidden_dims": [128, 0]}, "hidden_dims"),
    ({"activation": "gelu"}, "activation"),
    ({"val_size": 0}, "val_size"), ({"val_size": 50_000}, "val_size"),
    ({"momentum": 1.0}, "momentum"), ({"epochs": 0}, "epochs"), ({"seeds": []}, "seeds"),
    ({"std": [0.2, 0.0, 0.2]}, "std"), ({"dtype": "float16"}, "dtype"),
    ({"gather_from": "float32"}, "gather_from"),
    ({"residual": True, "hidden_dims": [128, 128]}, "hidden_dims"),
    ({"train_subset": 100, "batch_size": 128}, "batch_size"),
    ({"cuda_graph": True, "torch_compile": "default"}, "cuda_graph"),
    ({"lr": float("inf")}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"mean": [0.5, float("inf"), 0.5]}, "mean"), ({"std": [0.2, float("nan"), 0.2]}, "std"),
    ({"eval_every": 0}, "eval_every"),
    (GradflowSettings(depth=4), "depth"), (GradflowSettings(activations=["elu", "gelu"]), "activations"),
    (GradflowSettings(activations=["elu", "elu"]), "activations"), (GpuCheckSettings(gpu_variants=[]), "gpu_variants"),
    (HessianSettings(eps=0.0), "eps"), (HessianSettings(max_matvecs=5), "max_matvecs"),
    (GradflowSettings(trajectory_rtol=-1.0), "trajectory_rtol"),
])
def test_validate_rejects(kwargs, field):
    with pytest.raises(ConfigError) as e:
        (Config(**kwargs) if isinstance(kwargs, dict) else kwargs).validate()
    assert e.value.field == field
    assert "allowed" in str(e.value)


def test_batch_size_checked_against_loaded_size():
    with pytest.raises(ConfigError, match="batch_size"):
        Config(batch_size=200).validate(n_train=100)


def test_toml_unknown_key_and_wrong_type(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("learning_rate = 0.1\n")
    with pytest.raises(UserError, match="unknown key 'learning_rate'"):
        load_toml(f)
    f.write_text('lr = "fast"\n')
    with pytest.raises(UserError, match="lr = 'fast' has the wrong type"):
        load_toml(f)
    f.write_text('hidden_dims = [128, "x"]\n')
    with pytest.raises(UserError, match="hidden_dims"):
        load_toml(f)


# ---- the same errors through the real command line: one line, exit 2, no traceback

CLI_CASES = [
    (["--lr", "0"], ["lr", "0.0", "> 0"]),
    (["--lr", "-1"], ["lr", "-1.0"]),
    (["--lr", "abc"], ["lr", "abc"]),
    (["--batch-size", "0"], ["batch_size", "0"]),
    (["--batch-size", "45001"], ["batch_size", "45001", "45000"]),
    (["--hidden-dims", ","], ["hidden_dims", "without empty items"]),
    (["--hidden-dims", "128,-4"], ["hidden_dims", "-4"]),
    (["--hidden-dims", "12x"], ["hidden_dims", "12x"]),
    (["--activation", "gelu"], ["activation", "gelu", "elu"]),
    (["--val-size", "0"], ["val_size", "0", "49999"]),
    (["--val-size", "60000"], ["val_size", "60000"]),
    (["--residual", "--hidden-dims", "128,128"], ["hidden_dims", "[128, 128, 128]"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--backends", "mxnet:cpu"], ["mxnet:cpu", "numpy"]),
    (["--config", "missing.toml"], ["missing.toml"]),
    (["--lr", "1e400"], ["lr", "inf", "finite"]),
    (["--std", "0.2,nan,0.2"], ["std", "nan"]),
    (["--dataset", "synthetic", "--mean", "1e30", "0", "0"], ["mean", "--dataset synthetic"]),  # F42
    (["--data-dir", "x" * 300], ["cannot read data dir", "File name too long"]),  # D20b
    (["--dataset", "synthetic", "--std", "1e-30", "1", "1"], ["std", "made normalised"]),
    (["--dataset", "synthetic", "--data-dir", "/nonexistent"], ["data_dir", "reads no data"]),  # A12-M2
    (["--std", "1e-40", "1", "1"], ["std", "finite in float32"]),  # A12-F11: trained to NaN before
    (["--std", "1e-320"], ["std", "not 1"]),
    (["--mean", "1e308", "0", "0"], ["invalid mean", "finite in float32"]),  # A15-F1: the mean, not the std
    (["--seeds", "4294967296"], ["seeds", "the largest seed every library here takes"]),  # A13-F6
    (["--dtype", "float16"], ["dtype", "float16", "float32"]),
]


@pytest.mark.parametrize("args, needles", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_rejects_bad_values(cli, args, needles):
    assert_one_line_error(cli("bench.compare", *args), *needles)


@pytest.mark.parametrize("text, needles", [
    ("epochz = 3\n", ["unknown key 'epochz'"]),
    ('lr = "0.1"\n', ["lr", "wrong type"]),
    ("batch_size = 1.5\n", ["batch_size", "wrong type"]),
    ("lr = [\n", ["not valid TOML"]),
    ("lr = -0.5\n", ["lr", "-0.5"]),
    ("lr = inf\n", ["lr", "inf", "finite"]),
    ("depth = 21\n", ["'depth' is not a setting of python -m bench.compare"]),
    ("epochs = " + "9" * 5000 + "\n", ["a value TOML cannot hold"]),  # tomllib's int() digit limit
])
def test_cli_rejects_bad_toml(cli, tmp_path, text, needles):
    (tmp_path / "bad.toml").write_text(text)
    assert_one_line_error(cli("bench.compare", "--config", "bad.toml"), *needles)


def test_cli_rejects_a_toml_that_is_not_utf8(cli, tmp_path):
    (tmp_path / "bad.toml").write_bytes(b"lr = 0.1 # \xff\xfe\n")
    assert_one_line_error(cli("bench.compare", "--config", "bad.toml"), "bad.toml", "UTF-8")


# ---------------------------------------------------------------- misspelled flags and keys

FLAG_CASES = [
    (["--epoch", "3"], ["unrecognized arguments: --epoch 3", "(did you mean --epochs?)"]),
    (["--epcohs", "3"], ["--epcohs", "(did you mean --epochs?)"]),
    (["--lr=0.1", "--hiden-dims", "64"], ["--hiden-dims", "(did you mean --hidden-dims?)"]),
    (["--activation", "elux"], ["invalid choice: 'elux'", "(did you mean elu?)"]),
    (["--backends", "torch:gpu"], ["torch:gpu", "(did you mean torch:cuda?)"]),
    (["--backends", "numpy:gpu:1"], ["(did you mean numpy:cuda:1?)"]),
    (["--backends", "nmupy:cpu"], ["nmupy:cpu", "(did you mean numpy?)"]),
]


@pytest.mark.parametrize("args, needles", FLAG_CASES, ids=[" ".join(a) for a, _ in FLAG_CASES])
def test_a_misspelled_flag_or_name_gets_the_closest_one(args, needles, tmp_path, monkeypatch):
    from bench import compare

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        compare.main([*args, "--dataset", "synthetic", "--train-subset", "64", "--batch-size", "32",
                      "--epochs", "1", "--seeds", "42", "--quiet"])
    assert not list(tmp_path.iterdir())  # refused before anything was made
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


@pytest.mark.parametrize("command", COMMANDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_no_flag_is_ever_abbreviated(command, data):
    """Every proper prefix of every flag of every command is an error naming a flag, never the flag."""
    parser = parser_of(command)
    flags = sorted(o for o in parser._option_string_actions if o.startswith("--"))
    flag = data.draw(st.sampled_from([f for f in flags if len(f) > 4]))
    prefix = flag[:data.draw(st.integers(3, len(flag) - 1))]
    assume(prefix not in flags)
    with pytest.raises(UserError) as err:
        parser.parse_args([*NEEDED.get(command, []), prefix, "1"])
    message = str(err.value)
    assert message.startswith(f"unrecognized arguments: {prefix}")
    suggested = message.rsplit("(did you mean ", 1)[-1].rstrip("?)") if "did you mean" in message else None
    assert suggested is None or suggested in flags


@pytest.mark.parametrize("key", [k for k in COMMAND_FIELDS["compare"] if "_" in k])
def test_a_toml_key_written_with_dashes_names_the_key(tmp_path, key):
    f = tmp_path / "c.toml"
    f.write_text(f"{key.replace('_', '-')} = 1\n")
    with pytest.raises(UserError, match=rf"unknown key '{key.replace('_', '-')}' \(did you mean {key}\?\)"):
        load_toml(f, "compare")


@pytest.mark.parametrize("flags, needle", [
    (["--hidden-dims", "128,,64"], "without empty items"),   # an empty item was dropped (A11-F3)
    (["--backends", "numpy:cpu,"], "without empty items"),
    (["--out", ""], "--out is empty"),                       # became "." (A11-F4)
    (["--dataset", "cifar10", "--data-dir", ""], "--data-dir is empty"),  # fell back to the default
])
def test_an_empty_item_or_path_is_one_line(cli, flags, needle):
    assert_one_line_error(cli("bench.compare", "--epochs", "1", "--train-subset", "256", *flags), needle)


def test_a_comma_then_a_space_still_separates():
    from bench.compare import COMMAND
    from bench.runner import parse

    ctx = parse(COMMAND, ["--seeds", "42,", "43"])
    assert ctx.config.seeds == [42, 43]
