"""The one config: defaults, TOML, command-line overrides and every validation error."""

from __future__ import annotations

import dataclasses

import pytest

from bench.config import Config, load_toml, parse_config
from bench.errors import ConfigError, UserError
from conftest import assert_one_line_error


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


def test_every_field_has_a_flag_and_help():
    from bench.compare import build_parser
    text = build_parser().format_help()
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in text
        assert f.metadata["help"]


@pytest.mark.parametrize("kwargs, field", [
    ({"lr": 0.0}, "lr"), ({"lr": -1.0}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 45_001}, "batch_size"),
    ({"hidden_dims": []}, "hidden_dims"), ({"hidden_dims": [128, 0]}, "hidden_dims"),
    ({"activation": "gelu"}, "activation"),
    ({"val_size": 0}, "val_size"), ({"val_size": 50_000}, "val_size"),
    ({"momentum": 1.0}, "momentum"), ({"epochs": 0}, "epochs"), ({"seeds": []}, "seeds"),
    ({"std": [0.2, 0.0, 0.2]}, "std"), ({"dtype": "float16"}, "dtype"),
    ({"residual": True, "hidden_dims": [128, 128]}, "hidden_dims"),
    ({"train_subset": 100, "batch_size": 128}, "batch_size"),
    ({"cuda_graph": True, "torch_compile": "default"}, "cuda_graph"),
])
def test_validate_rejects(kwargs, field):
    with pytest.raises(ConfigError) as e:
        Config(**kwargs).validate()
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
    (["--hidden-dims", ","], ["hidden_dims", "[]"]),
    (["--hidden-dims", "128,-4"], ["hidden_dims", "-4"]),
    (["--hidden-dims", "12x"], ["hidden_dims", "12x"]),
    (["--activation", "gelu"], ["activation", "gelu", "elu"]),
    (["--val-size", "0"], ["val_size", "0", "49999"]),
    (["--val-size", "60000"], ["val_size", "60000"]),
    (["--residual", "--hidden-dims", "128,128"], ["hidden_dims", "[128, 128, 128]"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--backends", "jax:cpu"], ["jax:cpu", "numpy"]),
    (["--config", "missing.toml"], ["missing.toml"]),
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
])
def test_cli_rejects_bad_toml(cli, tmp_path, text, needles):
    (tmp_path / "bad.toml").write_text(text)
    assert_one_line_error(cli("bench.compare", "--config", "bad.toml"), *needles)
