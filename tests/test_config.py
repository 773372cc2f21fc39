"""Recipe loading: overrides, unknown keys with suggestions, wrong types, validation."""

import pytest

from rsft_gen.config import RecipeError, load_recipe, to_yaml

RECIPE = "recipes/addition_tiny.yaml"


def test_default_recipe_loads_and_overrides_apply():
    r = load_recipe(RECIPE, ["rounds=2", "generate.n=4", "accept.rule=all"])
    assert (r.rounds, r.generate.n, r.accept.rule) == (2, 4, "all")
    assert r.output_dir == "runs/addition_tiny"  # ${name} interpolation resolved
    assert "rounds: 2" in to_yaml(r)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(
        RecipeError, match=r"unknown recipe key 'generate.temprature'.*Did you mean 'generate.temperature'"
    ):
        load_recipe(RECIPE, ["generate.temprature=0.5"])


def test_unknown_top_level_key_in_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rouns: 3\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown recipe key 'rouns'.*Did you mean 'rounds'"):
        load_recipe(bad)


def test_wrong_type_names_the_key():
    with pytest.raises(RecipeError, match=r"generate.n"):
        load_recipe(RECIPE, ["generate.n=many"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("generate.n=0", "generate.n"),
        ("rounds=-1", "rounds"),
        ("accept.beta=0", "accept.beta"),
        ("accept.rule=maybe", "accept.rule"),
        ("generate.top_p=1.5", "generate.top_p"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(override, key):
    with pytest.raises(RecipeError, match=f"'{key}'"):
        load_recipe(RECIPE, [override])


def test_missing_recipe_file_and_malformed_override():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("recipes/nope.yaml")
    with pytest.raises(RecipeError, match="not key=value"):
        load_recipe(RECIPE, ["rounds"])


def test_log_q_follows_the_acceptance_rule_unless_set():
    from rsft_gen.config import records_log_q

    assert records_log_q(load_recipe(RECIPE)) is False  # threshold does not use log q: vLLM skips its log-probs
    assert records_log_q(load_recipe(RECIPE, ["accept.rule=likelihood_ratio"])) is True
    assert records_log_q(load_recipe(RECIPE, ["generate.log_q=true"])) is True
    with pytest.raises(RecipeError, match=r"'generate.log_q' is false, but accept.rule: likelihood_ratio needs log q"):
        load_recipe(RECIPE, ["accept.rule=likelihood_ratio", "generate.log_q=false"])
