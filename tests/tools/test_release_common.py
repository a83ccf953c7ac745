"""tools/release_common.py: the progress helper the release tools share."""

from tools.release_common import progress


def test_progress_reports_every_tenth_of_a_long_job_only(capsys):
    assert list(progress(range(2000), 2000, "decoding")) == list(range(2000))
    assert capsys.readouterr().err.splitlines() == [
        f"decoding: {200 * i}/2000" for i in range(1, 11)
    ]
    assert list(progress(range(20), 20, "decoding")) == list(range(20))
    assert capsys.readouterr().err == ""
