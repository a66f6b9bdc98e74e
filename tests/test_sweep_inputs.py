"""Every bad sweep value is a one-line UserError (exit 2), never a traceback or a silent number
(issue 14, part 5)."""

import pytest
from click.testing import CliRunner

from mbbench.cli import cli
from mbbench.errors import UserError
from mbbench.sweep import parse_basket, parse_dtype_name, parse_params, parse_range, run_sweep, validate_sweep


@pytest.mark.parametrize("text, expected", [
    ("512:640:64", [512, 576, 640]), ("1:3", [1, 2, 3]), (" 768 , 1024 ", [768, 1024]), ("22", [22]),
    ("22,22", [22]), ("5:5:7", [5])])
def test_good_ranges(text, expected):
    assert parse_range(text, "hidden") == expected


@pytest.mark.parametrize("text, message", [
    ("", "--hidden is empty"), ("   ", "--hidden is empty"),
    ("512:256:64", "STOP 256 is less than START 512"), ("512:1024:0", "STEP must be positive, got 0"),
    ("512:1024:-64", "STEP must be positive, got -64"), ("-64", "values must be >= 1, got -64"),
    ("0", "values must be >= 1, got 0"), ("-128:64:64", "values must be >= 1, got -128"),
    ("1:2:3:4", "expected START:STOP:STEP"), ("512:", "'' is not an integer"), ("a,b", "'a' is not an integer"),
    ("768,,1024", "'' is not an integer"), ("7.5", "'7.5' is not an integer")])
def test_bad_ranges(text, message):
    with pytest.raises(UserError, match="--hidden") as error:
        parse_range(text, "hidden")
    assert message in str(error.value)


@pytest.mark.parametrize("text, expected", [
    ("149M±5%", (149e6, 0.05)), ("149M+-2%", (149e6, 0.02)), ("0.4B", (0.4e9, 0.05)), ("395m +/- 1.5 %", (395e6, 0.015)),
    (None, None), ("", None)])
def test_good_params(text, expected):
    result = parse_params(text)
    assert result == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize("text, message", [
    ("1.2.3M", "expected a size"), ("149", "expected a size"), ("-5M", "expected a size"), ("M", "expected a size"),
    ("0M", "target must be positive"), ("149M±0%", "tolerance must be between"), ("149M±150%", "tolerance")])
def test_bad_params(text, message):
    with pytest.raises(UserError, match=message):
        parse_params(text)


def test_good_baskets():
    assert parse_basket("T4, L4=2") == {"T4": 1.0, "L4": 2.0}
    assert parse_basket("T4=0,L4=1") == {"T4": 0.0, "L4": 1.0}
    assert "H100-SXM" in parse_basket("all")


@pytest.mark.parametrize("text, message", [
    ("T4=abc", "weight of T4 'abc': expected a number"), ("T4=-1", "weight of T4 '-1': must be in [0, 1e+06]"),
    ("T4=nan", "weight of T4 'nan': must be a finite number"), ("T4=inf", "'inf': must be a finite number"),
    ("T4=", "weight of T4 '': expected a number"), ("T4,,L4", "empty name"), ("", "empty name"),
    ("=2", "empty name"),
    # issue 26: each weight finite but their sum overflowed to inf, and inf/inf crashed the sweep
    ("T4=1e308,L4=1e308", "weight of T4 '1e308': must be in [0, 1e+06]"), ("T4,t4", "t4 names T4 a second time"), ("T4=0,L4=0", "every weight is zero"),
    ("V100", "unknown GPU 'V100'")])
def test_bad_baskets(text, message):
    with pytest.raises(UserError) as error:
        parse_basket(text)
    assert message in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(head_dim=0), "--head-dim must be a positive even integer"), (dict(head_dim=-64), "--head-dim"),
    (dict(head_dim=63), "--head-dim"), (dict(layers=[0]), "--layers: values must be positive integers, got 0"),
    (dict(tokens=0), "--tokens must be a positive integer, got 0"), (dict(tokens=-5), "--tokens"),
    (dict(hidden=[700]), "no --hidden value (700) is divisible by --head-dim 64"),
    (dict(glu=[2305]), "no --glu value (2305) is even"), (dict(hidden=[]), "--hidden: no values")])
def test_bad_sweep_values(kwargs, message):
    args = {**dict(hidden=[768], glu=[2304], layers=[22], head_dim=64, tokens=16384), **kwargs}
    with pytest.raises(UserError) as error:
        validate_sweep(**args)
    assert message in str(error.value)
    with pytest.raises(UserError):
        run_sweep(args["hidden"], args["glu"], args["layers"], args["head_dim"], {"T4": 1.0}, args["tokens"])


def test_dtype_names():
    assert parse_dtype_name("bf16") == "bfloat16" and parse_dtype_name("fp32") == "float32"
    with pytest.raises(UserError, match="--dtype 'int8'"):
        parse_dtype_name("int8")


def test_tokens_are_exact():
    """A forward of 700 tokens is scored as 700 tokens (512 + 188), not rounded to whole documents."""
    [small] = run_sweep([768], [2304], [22], 64, {"H100-SXM": 1.0}, tokens=700)
    [large] = run_sweep([768], [2304], [22], 64, {"H100-SXM": 1.0}, tokens=1024)
    assert small["H100-SXM_tokens_per_second"] != large["H100-SXM_tokens_per_second"]


@pytest.mark.parametrize("option, value, message", [
    ("--head-dim", "0", "--head-dim must be a positive even integer"), ("--layers", "0", "--layers"),
    ("--tokens", "0", "--tokens must be a positive integer"), ("--hidden", "1536:512:64", "STOP 512 is less"),
    ("--glu", "1024:2048:0", "STEP must be positive"), ("--params", "1.2.3M", "--params"),
    ("--gpus", "T4=x", "weight of T4"), ("--dtype", "int8", "--dtype")])
def test_cli_sweep_bad_values_exit_2_with_one_line(tmp_path, option, value, message):
    result = CliRunner().invoke(cli, ["sweep", "--hidden", "768", "--glu", "2304", option, value,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
