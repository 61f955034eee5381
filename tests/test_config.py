import pytest

from distil.config import apply_overrides, load_recipe, parse_recipe
from distil.errors import ConfigError
from distil.recipes import bundled_recipes, resolve_recipe


def test_defaults_are_valid_and_overrides_apply() -> None:
    r = load_recipe(overrides=["student_train.lr=0.2", "kd.temperature=2", "data.limit=100"])
    assert r.student_train.lr == 0.2
    assert r.kd.temperature == 2.0
    assert r.data.limit == 100


def test_unknown_key_suggests_the_closest_and_all_problems_are_listed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({"kd": {"temprature": 3}, "student_train": {"lr": -1}, "dat": {}})
    msg = str(info.value)
    assert "3 problem(s)" in msg
    assert "Did you mean 'temperature'" in msg
    assert "Did you mean 'data'" in msg
    assert "student_train.lr" in msg


def test_both_weights_zero_is_rejected() -> None:
    with pytest.raises(ConfigError, match="nothing would be trained"):
        parse_recipe({"kd": {"kd_weight": 0, "ce_weight": 0}})


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["student_train.lr"])
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"kd": 3}, ["kd.temperature=2"])


def test_bundled_recipes_all_validate() -> None:
    names = bundled_recipes()
    assert {"digits", "fashion-mnist"} <= set(names)
    for name in names:
        load_recipe(resolve_recipe(name))


def test_unknown_recipe_name_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'digits'"):
        resolve_recipe("digit")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_recipe(str(tmp_path / "nope.yaml"))


def test_invalid_yaml_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kd: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(listy)


@pytest.mark.parametrize("name", bundled_recipes())
def test_override_of_an_anchored_section_changes_only_that_section(name: str) -> None:
    # The bundled recipes share one YAML anchor between teacher_train and student_train.
    base = load_recipe(resolve_recipe(name))
    r = load_recipe(resolve_recipe(name), overrides=["teacher_train.epochs=77"])
    assert r.teacher_train.epochs == 77
    assert r.student_train.epochs == base.student_train.epochs != 77


def test_apply_overrides_does_not_touch_its_input_or_share_aliases() -> None:
    shared = {"epochs": 1}
    raw = {"teacher_train": shared, "student_train": shared}
    out = apply_overrides(raw, ["student_train.epochs=5"])
    assert out == {"teacher_train": {"epochs": 1}, "student_train": {"epochs": 5}}
    assert shared == {"epochs": 1}


def test_recipe_new_writes_each_section_separately(tmp_path) -> None:
    import yaml
    from typer.testing import CliRunner

    from distil.cli.app import app

    path = tmp_path / "x.yaml"
    r = CliRunner().invoke(
        app, ["recipe", "new", str(path), "--from", "fashion-mnist", "--set", "teacher_train.epochs=20"]
    )
    assert r.exit_code == 0, r.output
    written = yaml.safe_load(path.read_text())
    assert written["teacher_train"]["epochs"] == 20
    assert written["student_train"]["epochs"] == 10


@pytest.mark.parametrize("key", ["num_classes", "in_channels", "image_size"])
def test_size_kwargs_are_a_config_error_that_says_they_come_from_the_data(key: str) -> None:
    with pytest.raises(ConfigError, match=f"kwargs cannot set {key}: distil takes them from the data"):
        load_recipe(overrides=[f"teacher.kwargs.{key}=5"])
    with pytest.raises(ConfigError, match="from the data"):
        parse_recipe({"kd": {"teachers": [{"model": "smallnet", "kwargs": {key: 5}}]}})


def test_old_train_key_suggests_teacher_and_student_train() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({"train": {"epochs": 3}})
    msg = str(info.value)
    assert "'teacher_train' and/or 'student_train'" in msg
    assert "transfer" not in msg.split("Valid keys")[0]


def test_unknown_model_and_dataset_names_are_reported_with_key_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe({"teacher": {"model": "largnet"}, "data": {"name": "digts"}, "kd": {"temprature": 3}})
    msg = str(info.value)
    assert "3 problem(s)" in msg
    assert "unknown model 'largnet'. Did you mean 'largenet'?" in msg
    assert "unknown dataset 'digts'. Did you mean 'digits'?" in msg
    assert "Did you mean 'temperature'" in msg
    # Paths to user code are resolved when they are used, not by the schema.
    parse_recipe({"teacher": {"model": "my.pkg:net"}, "data": {"name": "my.pkg:data"}})


def test_bad_set_value_blames_the_set_not_the_recipe_file() -> None:
    path = resolve_recipe("fashion-mnist")
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides=["student_train.lr=abc"])
    msg = str(info.value)
    assert "--set student_train.lr=abc: student_train.lr" in msg
    assert msg.startswith("the --set overrides of")
    # A problem of the file itself is still blamed on the file.
    bad = path.parent / "x"  # only the name is used in the message
    with pytest.raises(ConfigError) as info:
        parse_recipe({"student_train": {"lr": -1}}, source=str(bad), overrides=["kd.temperature=2"])
    assert str(info.value).startswith(f"{bad} has 1 problem(s)")
    assert "--set" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("student_train.learning_rate=0.1", "lr"),
        ("teacher_train.wd=0.01", "optimizer.weight_decay"),
        ("student_train.workers=2", "loader.num_workers"),
        ("student_train.batchsize=64", "batch_size"),
        ("student_train.num_epochs=3", "epochs"),
        ("kd.T=2", "temperature"),
    ],
)
def test_other_libraries_key_names_suggest_distils(override: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"Did you mean '{meant}'\\?"):
        load_recipe(None, [override])


def test_a_recipe_file_with_learning_rate_suggests_lr(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("student_train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'student_train.learning_rate'. Did you mean 'lr'\?"):
        load_recipe(path)


@pytest.mark.parametrize(("word", "value"), [("on", "on"), ("off", "off"), ("yes", "on"), ("auto", "auto")])
def test_teacher_cache_on_off_survive_yaml_booleans(tmp_path, word: str, value: str) -> None:
    # YAML 1.1 reads on/off/yes as booleans, in --set values and in recipe files alike.
    # A plain word still sets the mode of the teacher_cache group.
    assert (
        load_recipe(None, [f"student_train.teacher_cache={word}"]).student_train.teacher_cache.mode == value
    )
    path = tmp_path / "r.yaml"
    path.write_text(f"student_train:\n  teacher_cache: {word}\n")
    assert load_recipe(path).student_train.teacher_cache.mode == value
    path.write_text(f"student_train:\n  teacher_cache: {{mode: {word}, k: 4}}\n")
    assert load_recipe(path).student_train.teacher_cache.mode == value
    with pytest.raises(ConfigError, match="teacher_cache"):
        load_recipe(None, ["student_train.teacher_cache=maybe"])
