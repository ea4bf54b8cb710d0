"""Prompts P0..P7: the study's exact wording, ages in words, the synthetic variant, errors."""

import random

import numpy as np
import pytest

from echo_vlsm.prompts import (
    PROMPT_KEYS,
    Attributes,
    age_words,
    make_prompts,
    pick_prompt,
    prompt_keys,
    required_attributes,
)

LV = Attributes("lv", "2CH", "ED", sex="M", age=73, quality="Good", shape="oval")

# The study's task files, for this left-ventricle sample (reference README), both phrasings.
HEART, US = "of the heart", "in the cardiac ultrasound"
EXPECTED_LV = {
    "p0": "",
    "p1": "Left ventricular cavity {w}.",
    "p2": "Left ventricular cavity in two-chamber view {w}.",
    "p3": "Left ventricular cavity in two-chamber view {w} at end of the diastole cycle.",
    "p4": "Left ventricular cavity in two-chamber view {w} at end of the diastole cycle of a male.",
    "p5": "Left ventricular cavity in two-chamber view {w} at end of the diastole cycle of a "
    "seventy-three-year-old male.",
    "p6": "Left ventricular cavity in two-chamber view {w} at end of the diastole cycle of a "
    "seventy-three-year-old male with good image quality.",
    "p7": "Left ventricular cavity of oval shape in two-chamber view {w} at end of the diastole "
    "cycle of a seventy-three-year-old male with good image quality.",
}


def test_study_p7_verbatim():
    assert make_prompts(LV)["p7"][0] == (
        "Left ventricular cavity of oval shape in two-chamber view of the heart at end of the "
        "diastole cycle of a seventy-three-year-old male with good image quality."
    )


def test_all_prompts_both_phrasings():
    prompts = make_prompts(LV)
    assert list(prompts) == list(PROMPT_KEYS)
    assert prompts["p0"] == ""
    for key in PROMPT_KEYS[1:]:
        assert prompts[key] == [EXPECTED_LV[key].format(w=HEART), EXPECTED_LV[key].format(w=US)]


def test_synthetic_p6_carries_shape_and_no_p7():
    attrs = Attributes("myo", "2CH", "ED", sex="F", age=56, shape="triangle")
    prompts = make_prompts(attrs, kind="synthetic")
    assert list(prompts) == list(PROMPT_KEYS[:-1])
    assert prompts["p6"][1] == (
        "Myocardium of triangle shape in two-chamber view in the cardiac ultrasound at end of "
        "the diastole cycle of a fifty-six-year-old female."
    )
    assert prompts["p6"][0] == prompts["p6"][1].replace(US, HEART)
    assert prompts["p5"][0] == (
        "Myocardium in two-chamber view of the heart at end of the diastole cycle of a "
        "fifty-six-year-old female."
    )
    # a quality given to a synthetic sample is not used
    with_q = Attributes("myo", "2CH", "ED", sex="F", age=56, quality="Poor", shape="triangle")
    assert make_prompts(with_q, kind="synthetic") == prompts


def test_other_structures_views_phases_and_quality_lower_case():
    a = Attributes("la", "4CH", "ES", sex="F", age=84, quality="Medium", shape="circle")
    p = make_prompts(a)
    assert p["p1"] == [
        "Left atrium cavity of the heart.",
        "Left atrium cavity in the cardiac ultrasound.",
    ]
    # "a eighty-four-year-old" is the study's wording, kept for comparability
    assert p["p7"][1] == (
        "Left atrium cavity of circle shape in four-chamber view in the cardiac ultrasound at "
        "end of the systole cycle of a eighty-four-year-old female with medium image quality."
    )
    assert make_prompts(Attributes("myo", "4CH", "ES", "M", 40, "Poor", "square"))["p6"][
        0
    ].endswith("of a forty-year-old male with poor image quality.")


@pytest.mark.parametrize(
    "age, words",
    [
        (1, "one-year-old"),
        (21, "twenty-one-year-old"),
        (73, "seventy-three-year-old"),
        (100, "one hundred-year-old"),
    ],
)
def test_ages_in_words(age, words):
    assert age_words(age) == words
    prompts = make_prompts(Attributes("lv", "2CH", "ES", "F", age, "Good", "oval"))
    assert prompts["p5"][0].endswith(f"systole cycle of a {words} female.")


def test_numpy_and_float_ages_become_int():
    assert Attributes("lv", "2CH", "ED", age=np.int64(5)).age == 5
    assert type(Attributes("lv", "2CH", "ED", age=7.0).age) is int


@pytest.mark.parametrize(
    "field, value, accepted",
    [
        ("structure", "rv", "['lv', 'myo', 'la']"),
        ("view", "3CH", "['2CH', '4CH']"),
        ("phase", "MID", "['ED', 'ES']"),
        ("sex", "male", "['M', 'F']"),
        ("quality", "good", "['Good', 'Medium', 'Poor']"),
    ],
)
def test_attribute_errors_name_field_and_accepted_values(field, value, accepted):
    kwargs = dict(structure="lv", view="2CH", phase="ED")
    kwargs[field] = value
    with pytest.raises(ValueError) as err:
        Attributes(**kwargs)
    assert f"Attributes.{field}" in str(err.value) and repr(value) in str(err.value)
    assert accepted in str(err.value)


@pytest.mark.parametrize("age", [-1, 151, 3.5, "73", True])
def test_bad_age(age):
    with pytest.raises(ValueError, match="Attributes.age"):
        Attributes("lv", "2CH", "ED", age=age)


@pytest.mark.parametrize("shape", ["", "  ", "two\nlines", 5])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="Attributes.shape"):
        Attributes("lv", "2CH", "ED", shape=shape)


def test_attributes_are_frozen():
    with pytest.raises(AttributeError):
        LV.age = 5


@pytest.mark.parametrize(
    "kind, missing, prompt",
    [
        ("camus", "sex", "p4"),
        ("camus", "age", "p5"),
        ("camus", "quality", "p6"),
        ("camus", "shape", "p7"),
        ("synthetic", "sex", "p4"),
        ("synthetic", "age", "p5"),
        ("synthetic", "shape", "p6"),
    ],
)
def test_missing_attribute_names_prompt_and_attribute(kind, missing, prompt):
    kwargs = dict(sex="M", age=73, quality="Good", shape="oval")
    kwargs[missing] = None
    with pytest.raises(ValueError) as err:
        make_prompts(Attributes("lv", "2CH", "ED", **kwargs), kind=kind)
    assert f"prompt {prompt} ({kind})" in str(err.value)
    assert repr(missing) in str(err.value)


def test_keys_need_only_the_attributes_of_the_prompts_asked_for():
    no_shape = Attributes("lv", "2CH", "ED", "M", 73, "Good")  # no VQA answer yet
    full = make_prompts(LV)
    first_six = make_prompts(no_shape, keys=PROMPT_KEYS[:7])
    assert list(first_six) == list(PROMPT_KEYS[:7])
    assert first_six == {k: full[k] for k in PROMPT_KEYS[:7]}  # LV differs only in shape
    with pytest.raises(ValueError, match=r"prompt p7 \(camus\) needs .*\(s\) \['shape'\]"):
        make_prompts(no_shape)  # all keys by default: P7 needs the shape
    bare = Attributes("myo", "4CH", "ES")
    assert make_prompts(bare, keys=["p3", "p1"]) == {
        "p1": ["Myocardium of the heart.", "Myocardium in the cardiac ultrasound."],
        "p3": make_prompts(Attributes("myo", "4CH", "ES", "F", 1, "Poor", "oval"))["p3"],
    }  # in the order of PROMPT_KEYS
    assert make_prompts(bare, keys="p0") == {"p0": ""}
    with pytest.raises(ValueError, match=r"prompt p4 \(camus\) needs .*\['sex'\]"):
        make_prompts(bare, keys=["p6", "p4", "p1"])  # the first prompt that needs one
    with pytest.raises(ValueError, match=r"prompt p5 \(synthetic\) needs .*\['sex', 'age'\]"):
        make_prompts(bare, "synthetic", keys=["p6", "p5"])
    with pytest.raises(ValueError, match=r"unknown prompt key\(s\) \['p7'\].*end at p6"):
        make_prompts(LV, "synthetic", keys=["p1", "p7"])
    with pytest.raises(ValueError, match=r"unknown prompt key\(s\) \['P1'\]"):
        make_prompts(LV, keys=["P1"])


def test_missing_quality_hints_at_synthetic():
    with pytest.raises(ValueError, match="kind='synthetic'"):
        make_prompts(Attributes("lv", "2CH", "ED", "M", 73, None, "oval"))


def test_bad_kind_and_type():
    with pytest.raises(ValueError, match=r"unknown prompt kind 'real'.*\['camus', 'synthetic'\]"):
        make_prompts(LV, kind="real")
    with pytest.raises(TypeError, match="Attributes"):
        make_prompts({"structure": "lv"})


def test_prompt_keys_and_requirements():
    assert PROMPT_KEYS == ("p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7")
    assert prompt_keys("synthetic") == PROMPT_KEYS[:-1]
    assert required_attributes("p6", "camus") == ("sex", "age", "quality")
    assert required_attributes("p6", "synthetic") == ("sex", "age", "shape")
    assert required_attributes("p2") == ()
    with pytest.raises(ValueError, match="unknown prompt 'p7' for kind 'synthetic'"):
        required_attributes("p7", "synthetic")


# --------------------------------------------------------------------------- pick_prompt

TASK = {"img_name": "images/train/x.png", "mask_name": "masks/lv/train/x.png",
        "prompts": make_prompts(LV)}
SYNTH_TASK = {
    "img_name": "images/train/x_s0.png", "mask_name": "masks/lv/train/x_s0.png",
    "prompts": make_prompts(Attributes("lv", "4CH", "ES", "F", 56, shape="circle"), "synthetic"),
}


@pytest.mark.parametrize("rng_factory", [np.random.default_rng, random.Random])
def test_pick_prompt_draws_both_phrasings(rng_factory):
    rng = rng_factory(0)
    seen = {pick_prompt(TASK, "p3", rng) for _ in range(50)}
    assert seen == set(TASK["prompts"]["p3"])
    # reproducible for a seed
    a = [pick_prompt(TASK, "p5", rng_factory(7)) for _ in range(3)]
    b = [pick_prompt(TASK, "p5", rng_factory(7)) for _ in range(3)]
    assert a == b


def test_pick_prompt_p0_first_phrasing_and_override():
    assert pick_prompt(TASK, "p0", np.random.default_rng(0)) == ""
    assert pick_prompt(TASK, "p2") == TASK["prompts"]["p2"][0]  # no rng: first phrasing
    text = "Left ventricle in an echo image."
    assert pick_prompt(TASK, text, np.random.default_rng(0)) == text


def test_pick_prompt_random_is_any_non_empty_prompt():
    rng = np.random.default_rng(0)
    everything = {t for k in PROMPT_KEYS[1:] for t in TASK["prompts"][k]}
    seen = {pick_prompt(TASK, "random", rng) for _ in range(400)}
    assert "" not in seen and seen <= everything and len(seen) >= 12


def test_pick_prompt_errors_list_valid_keys():
    with pytest.raises(ValueError) as err:
        pick_prompt(SYNTH_TASK, "p7", np.random.default_rng(0))
    msg = str(err.value)
    assert "no prompt 'p7'" in msg and "synthetic" in msg
    assert "['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'random']" in msg
    with pytest.raises(ValueError, match=r"unknown prompt key 'p9'.*'p7', 'random', 'none'\]"):
        pick_prompt(TASK, "p9")
    with pytest.raises(ValueError, match="unknown prompt key 'P1'"):
        pick_prompt(TASK, "P1")
    with pytest.raises(ValueError, match="not a task"):
        pick_prompt({"img_name": "x"}, "p1")
    with pytest.raises(ValueError, match="must be a string"):
        pick_prompt(TASK, 1)
    with pytest.raises(TypeError, match="rng must be"):
        pick_prompt(TASK, "p1", rng=3)
    with pytest.raises(ValueError, match="no non-empty prompt"):
        pick_prompt({"prompts": {"p0": ""}}, "random", np.random.default_rng(0))
