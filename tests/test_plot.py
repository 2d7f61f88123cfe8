import pytest

from lljax import plot

pytest.importorskip("matplotlib")


@pytest.mark.parametrize("name", ["figure", "run.v1", "curve.png"])
def test_save_writes_a_png_at_exactly_the_given_path(tmp_path, name):
    # savefig alone appends ".png" to a name without a suffix (and rejects "run.v1"), so the
    # returned path did not exist.
    plt = plot.pyplot()
    before = set(plt.get_fignums())
    fig = plot.curves({"a": ([0, 1, 2], [0.1, 0.5, 0.7])})
    path = tmp_path / name
    assert plot.save(fig, path) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert set(plt.get_fignums()) == before  # closed


def test_save_keeps_other_formats_named_by_suffix(tmp_path):
    fig = plot.curves({"a": ([0, 1], [0.0, 1.0])})
    assert plot.save(fig, tmp_path / "curve.pdf") == str(tmp_path / "curve.pdf")
    assert (tmp_path / "curve.pdf").read_bytes()[:5] == b"%PDF-"


def test_histogram_drops_non_finite_samples_and_says_so():
    # ±inf made matplotlib raise "supplied range of [1.0, inf] is not finite".
    import numpy as np

    samples = {"a": [1.0, 2.0, 2.5, np.inf, -np.inf, np.nan], "b": [0.5, 1.5]}
    fig = plot.histogram(samples, density=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a (3 non-finite dropped)",
        "b",
    ]
    assert [sum(p.get_height() for p in c) for c in ax.containers] == [3, 2]
    plot.pyplot().close(fig)
