"""The fault catalogue (docs/errors.md), renamed flags: an old spelling is refused before anything runs, with one
line naming the new flag and exit code 2. In-process through ``sparcom.cli.main`` (what the script runs)."""

from __future__ import annotations

import pytest
from faults import assert_catalogue_line

from sparcom.cli import main
from sparcom.cli.options import REMOVED, RENAMED


@pytest.mark.parametrize(("path", "old", "new"), [(path, old, new) for path, flags in RENAMED.items()
                                                  for old, (new, _) in flags.items()])
def test_F1_an_old_spelling_is_refused_with_the_new_flag(path, old, new, capsys):
    for spelling in ([old, "3"], [f"{old}=3"]):
        capsys.readouterr()
        code = main([*path, "model", *spelling, "--out", "/nonexistent/never"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2
        assert len(err) == 1 and err[0].startswith("error: ") and f"{old} is now {new}" in err[0], err
        assert f"pass {new}" in err[0]
        if path == ("ablate",) and old == "--folds":  # the line docs/errors.md quotes for F1
            assert_catalogue_line(err[0])


@pytest.mark.parametrize(("path", "old"), [(path, old) for path, flags in REMOVED.items() for old in flags])
def test_F1_a_removed_flag_is_refused_with_why(path, old, capsys):
    for spelling in ([old, "auto"], [f"{old}=auto"]):
        capsys.readouterr()
        code = main([*path, "model", *spelling, "--out", "/nonexistent/never"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2
        assert len(err) == 1 and err[0].startswith("error: ") and f"{old} was removed" in err[0], err
        assert f"drop {old}" in err[0] and "docs/causal.md" in err[0]
