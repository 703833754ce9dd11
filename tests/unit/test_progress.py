"""The CLI's progress bars (carecore.progress)."""
import pytest

from carecore.errors import CareError
from carecore.progress import LazyBar, tqdm_progress


def test_a_bar_is_drawn_at_its_first_count_and_starts_again_for_a_stage(capsys):
    """An operation refused before its first count leaves no empty bar above its error (a user trial saw
    "qc: 0 image [00:00]" and "training: 0/180 s" before refusals); a count with a new total (the next stage:
    the filters' screening of starts, then their grid points) starts the bar again, not past its end."""
    with pytest.raises(CareError):
        with tqdm_progress("qc", unit="image"):
            raise CareError("refused")
    bar = LazyBar(total=10, desc="training")
    bar.write("plan: said above the bar")
    bar.total = 12
    bar.close()
    said = capsys.readouterr()
    assert said.err == "" and said.out == "plan: said above the bar\n", said

    with tqdm_progress("filters", unit="point") as progress:
        for done in range(1, 8):
            progress(done, 7, "choosing 3 of 7 starts")
        for done in range(1, 91):
            progress(done, 90, "tv on cubic interpolation")
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert lines[-1].startswith("filters: 100%") and " 90/90 " in lines[-1] and "tv on cubic interpolation" in lines[-1]
    # the rate's unit apart from its number ("1253.04 point/s", not "1253.04point/s")
    assert " point/s" in lines[-1] and "point/s" not in lines[-1].replace(" point/s", ""), lines[-1]
    with tqdm_progress("predicting", unit="tile") as progress:   # (no "tiles" after "tile/s")
        progress(1, 1, "tiles")
    line = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert line.startswith("predicting: 100%") and line.endswith(" tile/s]"), line
    # the new stage drawn from 0, with its own text (the old bar went on from 7: "7/90" with the screening's text)
    again = [line for line in lines if " 0/90 " in line]
    assert again and all("tv on cubic interpolation" in line for line in again) \
        and not any("/90 " in line and "choosing" in line for line in lines), lines
