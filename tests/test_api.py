"""The estimator API: ``Recommender(...).fit(df)``, recommendations in original ids, save and load."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sasrec import Recommender
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError, SASRecError

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"epochs": 2, "hidden": 16, "maxlen": 20, "quiet": True, "eval_negatives": 20}


def interactions(num_users: int = 300, num_items: int = 250) -> dict[str, list]:
    """A log with string ids (user-N, item-N) and shuffled-looking integer timestamps."""
    seqs = make_synthetic(num_users=num_users, num_items=num_items, seed=2)
    rows = [(f"user-{u}", f"item-{i}", 1000 * t + u) for u in range(seqs.num_users) for t, i in enumerate(seqs[u])]
    users, items, times = zip(*rows, strict=True)
    return {"user_id": list(users), "item_id": list(items), "timestamp": list(times)}


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    block = re.search(r"<!-- api-example.*?-->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    pd.DataFrame(interactions()).to_csv("interactions.csv", index=False)
    namespace: dict = {}
    exec(compile(block.replace("epochs=20", "epochs=2"), "README", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["rec"], Recommender)
    assert (tmp_path / "my-model").is_dir()


@pytest.mark.parametrize("kind", ["pandas", "polars", "dict"])
def test_fit_recommend_save_load(kind: str, tmp_path: Path) -> None:
    log = interactions()
    if kind == "dict":
        data = {k: np.asarray(v) for k, v in log.items()}
    else:
        data = pytest.importorskip(kind).DataFrame(log)
    rec = Recommender(**SMALL).fit(data, time_col="timestamp", run_dir=tmp_path / "fit")
    assert set(rec.results) >= {"sampled", "full", "best_epoch"}
    top = rec.recommend_users(["user-1", "user-2"], k=4)
    cols = top if kind == "dict" else {c: list(top[c]) for c in ("user", "item", "score", "rank")}
    assert cols["user"] == ["user-1"] * 4 + ["user-2"] * 4
    assert cols["rank"] == [1, 2, 3, 4] * 2
    assert all(i.startswith("item-") for i in cols["item"])
    history = [i for u, i in zip(log["user_id"], log["item_id"], strict=True) if u == "user-1"]
    assert not set(cols["item"][:4]) & set(history)  # seen items are filtered by default
    assert all(np.diff(cols["score"][:4]) <= 0)
    saved = rec.save(tmp_path / "saved")
    again = Recommender.load(saved, output=kind)
    top2 = again.recommend_users(["user-1", "user-2"], k=4)
    cols2 = top2 if kind == "dict" else {c: list(top2[c]) for c in ("user", "item", "score", "rank")}
    assert cols2 == cols
    similar = again.similar_items("item-3", k=3)
    assert len(similar["item"] if kind == "dict" else similar) == 3


def test_recommend_takes_the_predictors_arguments_and_quiet_is_silent(tmp_path: Path, capsys) -> None:
    """The DataFrame estimator's recommend has the arguments of sasrec.recommend.Recommender.recommend."""
    rec = Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=tmp_path / "f")
    assert capsys.readouterr().out == ""  # quiet=True: not even the final metrics
    kept = rec.recommend(["item-3", "item-7"], k=200, exclude_seen=False)
    assert {"item-3", "item-7"} <= set(kept["item"])
    skipped = rec.recommend(["item-3", "no-such-item"], k=5, unknown="skip")
    assert list(skipped["rank"]) == [1, 2, 3, 4, 5]
    with pytest.raises(SASRecError, match="history must be a list of item ids, not the string 'item-3'"):
        rec.recommend("item-3", k=3)
    with pytest.raises(SASRecError, match="users must be a list of user ids"):
        rec.recommend_users("user-1", k=3)
    with pytest.raises(SASRecError, match="unknown user 'nobody'"):
        rec.recommend_users(["user-1", "nobody"], k=3)
    some = rec.recommend_users(["user-1", "nobody"], k=3, unknown="skip")
    assert list(some["user"]) == ["user-1"] * 3


def test_preprocessing_matches_the_command_line(tmp_path: Path) -> None:
    """Rows are sorted by time within a user: a log given newest-first yields the same model input."""
    log = interactions(120, 100)
    order = np.argsort(-np.asarray(log["timestamp"]), kind="stable")
    reversed_log = {k: [v[j] for j in order] for k, v in log.items()}
    a = Recommender(**SMALL, output="dict").fit(log, time_col="timestamp", run_dir=tmp_path / "a")
    b = Recommender(**SMALL, output="dict").fit(reversed_log, time_col="timestamp", run_dir=tmp_path / "b")
    assert a.predictor.user_history("user-5") == b.predictor.user_history("user-5")


def test_bad_input_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dropout"):
        Recommender(dropout=1.5)
    with pytest.raises(ConfigError, match="epochs"):
        Recommender(epochs=-1)
    with pytest.raises(ConfigError, match="no column 'user'"):
        Recommender(**SMALL).fit(interactions(), user_col="user", run_dir=tmp_path / "x")
    bad = interactions()
    bad["timestamp"][3] = float("nan")
    with pytest.raises(ConfigError, match="row 3"):
        Recommender(**SMALL).fit(bad, time_col="timestamp", run_dir=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------- inputs of fit()


class Trained(Exception):
    """Raised by the stand-in for the training loop: the tests below need only what fit() trains on."""


@pytest.fixture
def trained_on(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """fit() stops where training would start; each call records the dataset and id maps it wrote."""
    import sasrec.train

    seen: list[dict[str, str]] = []

    def stand_in(config, **kwargs):
        data = Path(config.dataset)
        seen.append({p.name.removeprefix("data."): p.read_text() for p in data.parent.iterdir()})
        raise Trained

    monkeypatch.setattr(sasrec.train, "train", stand_in)
    return seen


def written(rec_kwargs: dict, data, seen: list, tmp_path: Path, **fit_kwargs) -> dict[str, str]:
    with pytest.raises(Trained):
        Recommender(min_count=1, **rec_kwargs).fit(data, run_dir=tmp_path / f"fit{len(seen)}", **fit_kwargs)
    return {k: v for k, v in seen[-1].items() if k != "stats.json"}


def small_log() -> dict[str, list]:
    """6 users x 5 items with integer ids and times in 2023, rows shuffled (so that fit must sort by time)."""
    rng = np.random.default_rng(4)
    rows = [(u, int(rng.integers(1, 12)), 1_700_000_000 + 3600 * t + u) for u in range(6) for t in range(5)]
    rows = [rows[j] for j in rng.permutation(len(rows))]
    users, items, times = (list(c) for c in zip(*rows, strict=True))
    return {"user_id": users, "item_id": items, "ts": times}


def frame(kind: str, columns: dict[str, list]):
    if kind == "dict":
        return {k: np.asarray(v) for k, v in columns.items()}
    return pytest.importorskip(kind).DataFrame(columns)


@pytest.mark.parametrize("kind", ["pandas", "polars", "dict"])
def test_date_times_and_numeric_strings_order_rows_as_numbers_do(kind, trained_on, tmp_path: Path) -> None:
    log = small_log()
    reference = written({}, frame(kind, log), trained_on, tmp_path, time_col="ts")
    seconds = np.asarray(log["ts"])
    variants = {
        "datetime64": seconds.astype("datetime64[s]").astype("datetime64[ns]"),
        "ISO strings": [str(np.datetime64(int(t), "s")) + "Z" for t in seconds],
        "numeric strings": [str(t) for t in seconds],
    }
    for name, times in variants.items():
        got = written({}, frame(kind, {**log, "ts": times}), trained_on, tmp_path, time_col="ts")
        assert got == reference, name
    assert reference["txt"] != written({}, frame(kind, log), trained_on, tmp_path)["txt"]  # the times matter


@pytest.mark.parametrize("kind", ["pandas", "polars", "dict"])
def test_integral_float_ids_are_the_integer_ids(kind, trained_on, tmp_path: Path) -> None:
    """A merge that brings NaN into an integer column makes it float: 3.0 must be item "3", not "3.0"."""
    log = small_log()
    reference = written({}, frame(kind, log), trained_on, tmp_path, time_col="ts")
    floats = {**log, "item_id": [float(i) for i in log["item_id"]], "user_id": [float(u) for u in log["user_id"]]}
    assert written({}, frame(kind, floats), trained_on, tmp_path, time_col="ts") == reference
    assert "\t3\n" in reference["item_map.tsv"] and ".0" not in reference["item_map.tsv"]


@pytest.mark.parametrize("kind", ["pandas", "polars", "dict"])
@pytest.mark.parametrize(
    "column, row, value, message",
    [
        ("user_id", 4, None, "missing id ("),  # None, or NaN where pandas holds strings
        ("item_id", 7, float("nan"), "missing id (nan)"),
        ("user_id", 2, "", "missing id ('')"),
        ("item_id", 9, 3.5, "3.5 is not an integral number"),
        ("ts", 5, None, "missing timestamp"),
        ("ts", 6, "yesterday", "'yesterday' is not a number or an ISO-8601 date/time"),
        ("ts", 3, "2023-11-14T22:13:20Z", "a date/time ('2023-11-14T22:13:20Z') in a column whose row 0 is a number"),
    ],
)
def test_a_bad_cell_is_refused_naming_its_column_and_row(
    kind, column, row, value, message, trained_on, tmp_path: Path
) -> None:
    log = small_log()
    if isinstance(value, float):  # a float column, as a merge leaves an integer one
        log[column] = [float(v) for v in log[column]]
    elif column != "ts" or isinstance(value, str):  # a string column (of numeric strings for the times)
        log[column] = [str(v) for v in log[column]]
    log[column][row] = value
    with pytest.raises(ConfigError) as raised:
        Recommender(min_count=1).fit(frame(kind, log), time_col="ts", run_dir=tmp_path / "run")
    assert str(raised.value).startswith(f"column {column!r}, row {row} (counting from 0): ")
    assert message in str(raised.value)
    assert not trained_on and os.listdir(tmp_path) == []


def test_a_missing_date_time_names_its_row(trained_on, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(small_log())
    df["ts"] = pd.to_datetime(df["ts"], unit="s")
    df.loc[5, "ts"] = pd.NaT
    with pytest.raises(ConfigError, match=r"column 'ts', row 5 \(counting from 0\): missing timestamp \(NaT\)"):
        Recommender(min_count=1).fit(df, time_col="ts", run_dir=tmp_path / "run")


def test_columns_must_differ_and_parameters_hold_the_command_lines_limits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user_col and item_col both name column 'user_id'"):
        Recommender().fit(small_log(), item_col="user_id")
    with pytest.raises(ConfigError, match="item_col and time_col both name column 'ts'"):
        Recommender().fit(small_log(), item_col="ts", time_col="ts")
    for bad in (-1, 1.5, True, "5"):
        with pytest.raises(ConfigError, match="min_count must be an integer >= 0"):
            Recommender(min_count=bad)
    with pytest.raises(ConfigError, match="threads must be from 0 to 1024"):
        Recommender(threads=100000)
    with pytest.raises(ConfigError, match="does nothing with loss='ce'"):
        Recommender(loss="ce", negatives=5)


def test_fit_without_run_dir_leaves_no_temporary_directory_and_save_errors_name_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def runs() -> list[str]:  # (PyTorch may keep its own caches there too)
        return sorted(p.name for p in tmp_path.glob("sasrec-*"))

    log = interactions(120, 100)
    with pytest.raises(ConfigError, match="eval_negatives=500: "):  # refused on this data, after preprocessing
        Recommender(**{**SMALL, "eval_negatives": 500}).fit(log, time_col="timestamp")
    assert runs() == []
    rec = Recommender(**SMALL).fit(log, time_col="timestamp")
    assert len(runs()) == 1 and rec.run_dir.parent.name == runs()[0]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    target = locked / "model" if not os.access(locked, os.W_OK) else Path("/sys/model")  # root: sysfs refuses
    try:
        with pytest.raises(SASRecError) as raised:
            rec.save(target)
    finally:
        locked.chmod(0o755)
    assert str(raised.value).startswith(f"save() {target}: cannot write in {target.parent}") and not target.exists()
    with pytest.raises(SASRecError, match="already exists"):
        rec.save(locked)
    saved = rec.save(tmp_path / "kept")
    del rec, raised  # (the error's traceback holds the Recommender too)
    gc.collect()
    assert runs() == [] and saved.is_dir()  # the temporary run went with its Recommender; the copy stays
    assert len(Recommender.load(saved, output="dict").recommend_users(["user-1"], k=3)["item"]) == 3


def test_a_misspelt_hyperparameter_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="unknown hyperparameter.*'epoch' \\(did you mean 'epochs'\\?\\)"):
        Recommender(epoch=3)
    # Other libraries' names, which no spelling distance finds, and fit()'s own argument.
    with pytest.raises(
        ConfigError, match="'learning_rate' \\(did you mean 'lr'\\?\\).*'n_factors' \\(did you mean 'hidden'"
    ):
        Recommender(learning_rate=0.01, n_factors=64)
    with pytest.raises(ConfigError, match="'run_dir' is not a hyperparameter: fit\\(\\) takes the data and run_dir"):
        Recommender(run_dir="x")


def test_load_refuses_an_empty_path_and_an_unknown_checkpoint(tmp_path) -> None:
    from helpers import make_run

    from sasrec.errors import ConfigError

    with pytest.raises(ConfigError, match="the path is empty"):
        Recommender.load("")  # was read as the current directory
    run = make_run(tmp_path)
    for checkpoint in ("", "foo"):
        with pytest.raises(ConfigError, match=f"checkpoint must be 'best' or 'last', got '{checkpoint}'"):
            Recommender.load(run, checkpoint=checkpoint)  # said "not found; retrain"


def test_errors_name_the_apis_parameters_and_the_users_own_ids(tmp_path: Path) -> None:
    """The configuration and pre-flight checks are shared with the command line; through the API their
    messages name keyword arguments (not ``--options``) and the user ids given to fit (not file numbers)."""
    with pytest.raises(ConfigError) as raised:
        Recommender(loss="ce", negatives=5)
    assert str(raised.value).startswith("negatives=5 does nothing with loss='ce'") and "--" not in str(raised.value)

    rng = np.random.default_rng(0)  # 12 items: no user has 11 unseen ones for the sampled protocol
    log = {"user_id": [f"u{u}" for u in range(30) for _ in range(8)], "item_id": list(rng.integers(0, 12, 240))}
    with pytest.raises(ConfigError) as raised:
        Recommender(min_count=1, quiet=True, eval_negatives=11).fit(log, run_dir=tmp_path / "a")
    message = str(raised.value)
    assert message.startswith("eval_negatives=11: the sampled protocol") and "--" not in message
    assert "val_protocol='sampled'" in message and "lower eval_negatives to at most" in message
    assert "the first: user 'u0')" in message  # was "user #1, counting users in ascending id order"

    with pytest.raises(ConfigError) as raised:
        Recommender(min_count=1, negatives=50, loss_options={"shared": True}).fit(log, run_dir=tmp_path / "b")
    assert "(loss_options={'shared': True})" in str(raised.value)
    assert str(raised.value).endswith("or pass loss_options={'shared': False}")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ run_dir, save and load


def test_fit_refuses_a_run_dir_that_is_not_empty_before_writing_anything(tmp_path: Path) -> None:
    """A saved model (or any run) given as run_dir: its files were overwritten by the new dataset's id maps,
    pairing the old weights with new ids, before the run was refused."""
    rec = Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=tmp_path / "first")
    saved = rec.save(tmp_path / "saved")
    before = {p: p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    other = interactions(num_users=120)
    other["item_id"] = [i.replace("item-", "other-") for i in other["item_id"]]
    for run_dir in (saved, tmp_path / "first" / "run"):  # save()'s layout, and a run directory itself
        with pytest.raises(ConfigError, match=f"run_dir {re.escape(str(run_dir))} is not empty; give a new"):
            Recommender(**SMALL).fit(other, time_col="timestamp", run_dir=run_dir)
    assert {p: p.read_bytes() for p in saved.rglob("*") if p.is_file()} == before
    assert len(Recommender.load(saved).recommend(["item-3"], k=3)) == 3


def test_a_saved_model_can_be_moved_and_copied_and_reads_its_own_id_maps(tmp_path: Path) -> None:
    rec = Recommender(**SMALL).fit(interactions(), time_col="timestamp")
    top = Recommender.load(rec.save(tmp_path / "a"), output="dict").recommend_users(["user-1"], k=5)
    (tmp_path / "a").rename(tmp_path / "b")  # the config still names a/data/data.txt
    assert Recommender.load(tmp_path / "b", output="dict").recommend_users(["user-1"], k=5) == top
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    maps = tmp_path / "b" / "data" / "data.item_map.tsv"
    maps.write_text(maps.read_text().replace("item-", "gone-"))  # c must not read b's maps
    assert Recommender.load(tmp_path / "c", output="dict").recommend_users(["user-1"], k=5) == top


def test_saving_a_model_loaded_from_a_sasrec_train_run_copies_that_run_only(tmp_path: Path) -> None:
    """Before, save() copied the run directory's parent (a whole runs/ folder) and then failed."""
    Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=tmp_path / "runs" / "fit")
    (tmp_path / "runs" / "unrelated.txt").write_text("not part of any run")
    run = tmp_path / "runs" / "fit" / "run"  # a run directory, its dataset and maps in ../data
    loaded = Recommender.load(run, output="dict")
    assert loaded.results is not None and loaded.results["best_epoch"] >= 1  # results.json is read
    top = loaded.recommend_users(["user-1"], k=5)
    saved = loaded.save(tmp_path / "copy")
    assert sorted(p.name for p in saved.iterdir()) == ["data", "run"]
    copied = ["data.item_map.tsv", "data.txt", "data.user_map.tsv", "id_kinds.json"]  # not stats.json
    assert sorted(p.name for p in (saved / "data").iterdir()) == copied
    shutil.rmtree(tmp_path / "runs")
    assert Recommender.load(saved, output="dict").recommend_users(["user-1"], k=5) == top


def test_load_refuses_an_unknown_output() -> None:
    with pytest.raises(ConfigError, match="output must be one of pandas, polars, dict, not 'xml'"):
        Recommender.load("anything", output="xml")


@pytest.mark.parametrize("given", [False, True])
def test_ctrl_c_in_fit_keeps_a_given_run_dir_to_resume_and_says_so(
    given: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Before, the message offered `sasrec train --resume DIR` for a directory that fit then removed."""
    import sasrec.train
    from sasrec.cli import main

    epochs = []
    train_epoch = sasrec.train.Trainer.train_epoch

    def stopped_in_the_second(self):
        epochs.append(len(epochs) + 1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return train_epoch(self)

    monkeypatch.setattr(sasrec.train.Trainer, "train_epoch", stopped_in_the_second)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    run_dir = tmp_path / "fit" if given else None
    with pytest.raises(KeyboardInterrupt):  # quiet=True: the stop's line still reaches stderr
        Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=run_dir)
    out = capsys.readouterr().err
    assert [p for p in os.listdir(tmp_path / "temp") if p.startswith("sasrec-")] == []  # torch may cache there
    if not given:
        assert "interrupted; the run was in a temporary directory, so nothing was kept" in out
        assert "--resume" not in out
        return
    assert f"interrupted; epoch 1 is saved; continue with `sasrec train --resume {run_dir / 'run'}`" in out
    monkeypatch.setattr(sasrec.train.Trainer, "train_epoch", train_epoch)
    assert main(["train", "--resume", str(run_dir / "run"), "--quiet"]) == 0
    assert len(Recommender.load(run_dir).recommend_users(["user-1"], k=3)) == 3


def test_wrong_kinds_of_values_get_one_line_naming_the_argument(tmp_path: Path) -> None:
    """Each was a TypeError/ValueError from deep inside, a silent misreading, or a CLI option's name."""
    with pytest.raises(ConfigError, match="loss_options must be a table \\(a dict in Python\\).*got 't=0.75'"):
        Recommender(loss="gbce", loss_options="t=0.75")  # was ValueError: dictionary update sequence ...
    with pytest.raises(SASRecError, match="^fit\\(\\) data: no interactions \\(0 rows\\)"):
        Recommender().fit({"user_id": [], "item_id": []})
    with pytest.raises(SASRecError, match="at least 1000 interactions .*; try a lower min_count$"):
        Recommender(min_count=1000).fit(interactions())
    rec = Recommender(**SMALL).fit(interactions(), time_col="timestamp")
    with pytest.raises(SASRecError, match="similar_items takes one item id, not list \\['item-3'\\]"):
        rec.similar_items(["item-3"])
    with pytest.raises(SASRecError, match="unknown item id\\(s\\) in the request: 'nope'.*; give another$"):
        rec.similar_items("nope")
    for call in (
        lambda: rec.recommend(["item-3"], exclude_seen="no"),
        lambda: rec.recommend_users(["user-1"], 3, "no"),
    ):
        with pytest.raises(ConfigError, match="exclude_seen must be True or False, got 'no'"):
            call()  # "no" was read as True
    with pytest.raises(SASRecError, match="unknown user 'user-x'.*drops users with fewer than the minimum count"):
        rec.recommend_users(["user-x"])


@pytest.mark.parametrize("kind", ["pandas", "dict"])
def test_integer_ids_come_back_as_integers_and_merge_with_the_input(kind: str, tmp_path: Path) -> None:
    """Before, every id came back as a string, so merging results with the input failed (str vs int64)."""
    log = interactions()
    numeric = {
        "user_id": [int(u.removeprefix("user-")) for u in log["user_id"]],
        "item_id": [int(i.removeprefix("item-")) for i in log["item_id"]],
        "timestamp": log["timestamp"],
    }
    rec = Recommender(**SMALL).fit(frame(kind, numeric), time_col="timestamp")
    for model in (rec, Recommender.load(rec.save(tmp_path / "saved"), output=kind)):
        top = model.recommend_users([1, 2], k=3)
        users, items = (list(top[c]) for c in ("user", "item"))
        assert users == [1, 1, 1, 2, 2, 2] and all(isinstance(i, int) for i in items + users)
        assert all(isinstance(i, int) for i in list(model.recommend([3, 7], k=3)["item"]))
        assert all(isinstance(i, int) for i in list(model.similar_items(3, k=3)["item"]))
    if kind == "pandas":
        merged = top.merge(frame(kind, numeric), left_on="item", right_on="item_id")  # was a ValueError
        assert len(merged) > 0
    strings = Recommender(**SMALL).fit(log, time_col="timestamp")  # string ids stay strings
    assert all(isinstance(i, str) for i in strings.recommend_users(["user-1"], k=3)["item"])


def test_a_failed_fit_empties_the_users_empty_run_dir_and_keeps_saved_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure once an epoch is saved (divergence, out of memory) keeps the run, as its message says; one
    before that leaves the user's empty directory empty, and a directory fit made is removed."""
    import sasrec.train

    calls = []
    train_epoch = sasrec.train.Trainer.train_epoch

    def fails_in(epoch: int):
        def train_epoch_or_fail(self):
            calls.append(1)
            if len(calls) == epoch:
                raise RuntimeError("out of memory")
            return train_epoch(self)

        return train_epoch_or_fail

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(sasrec.train.Trainer, "train_epoch", fails_in(1))
    with pytest.raises(RuntimeError):
        Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=empty)
    assert os.listdir(empty) == []  # was: run/ left behind, its config naming the removed data/
    calls.clear()
    monkeypatch.setattr(sasrec.train.Trainer, "train_epoch", fails_in(2))
    with pytest.raises(RuntimeError):
        Recommender(**SMALL).fit(interactions(), time_col="timestamp", run_dir=tmp_path / "new")
    assert (tmp_path / "new" / "run" / "last.safetensors").exists()
    assert len(Recommender.load(tmp_path / "new").recommend(["item-3"], k=2)) == 2
    calls.clear()
    with pytest.raises(RuntimeError):
        Recommender(**SMALL).fit(interactions(), time_col="timestamp")  # temporary: nothing to keep


def test_only_real_option_flags_are_reworded() -> None:
    from sasrec.api import _in_api_terms

    assert _in_api_terms("cannot write /runs/ml--lr-0.1/x; lower --lr (now 0.1)") == (
        "cannot write /runs/ml--lr-0.1/x; lower lr (now 0.1)"  # a path holding "--lr" is left alone
    )
    assert _in_api_terms("use --device cpu, not --lr -0.5") == "use device='cpu', not lr=-0.5"
