import json

import pytest

from tacluster.errors import InputError
from tacluster.run.rundir import RUN_FILE, check_out_dir


def test_rerun_into_an_edited_run_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "odd"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({"run_key": "k", "status": "complete",
                                            "history": [{"action": "rename"}, {"action": "merge"}]}))
    with pytest.raises(InputError, match=r"holds 2 edit\(s\) \(rename, merge\) that a rerun would lose"):
        check_out_dir(out, "k", overwrite=False)
    check_out_dir(out, "k", overwrite=True)


def test_rerun_of_the_same_unedited_run_is_allowed(tmp_path):
    out = tmp_path / "odd"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({"run_key": "k", "status": "complete"}))
    check_out_dir(out, "k", overwrite=False)


@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_out_of_range_seed_is_refused_at_argument_parsing(tmp_path, capsys, seed):
    from tacluster.run.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["cluster", str(tmp_path), "--k", "2", "--out", str(tmp_path / "o"), "--seed", seed])
    assert exc.value.code == 2
    assert "seed must be 0 to 4294967295" in capsys.readouterr().err


def test_backbones_fetch_lite_exits_0_with_nothing_to_fetch(capsys):
    from tacluster.run.cli import main

    assert main(["backbones", "fetch", "lite"]) == 0
    assert "nothing to fetch" in capsys.readouterr().out


def test_closed_pipe_exits_quietly(monkeypatch, capsys):
    from tacluster.run import cli

    def closed(a):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_backbones", closed)
    assert cli.main(["backbones"]) == 0
    assert "Broken pipe" not in capsys.readouterr().err


def test_out_equal_to_input_is_refused_even_with_overwrite(tmp_path, capsys):
    """(An --out that contains the input stays allowed: tests/reliability's overwrite test.)"""
    from tacluster.run.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["cluster", str(photos), "--k", "2", "--out", str(photos), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is the input folder" in err and len(err.strip().splitlines()) == 1
