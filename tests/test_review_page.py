"""The review page (`ldl_jax.inspect --html`): its data, and the page driven in headless Chromium.

The browser test talks the Chrome DevTools protocol over `--remote-debugging-pipe` (JSON
messages on file descriptors 3 and 4), so it needs no Python package beyond the standard
library; it is skipped where no `chromium` is installed (`.ci/run` installs Debian's). Its
screenshot is kept as `review_page.png` in $LDL_JAX_TEST_ARTIFACTS, or in pytest's tmp dir.
"""

import base64
import io
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldl_jax import inspect as lambda_inspect
from ldl_jax import review_page
from tests.helpers.workdirs import copy_workdir
from tools import apply_review

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_DATA = re.compile(r'<script type="application/json" id="review-data">(.*?)</script>', re.S)


def _embedded_data(html: str) -> dict:
    (payload,) = PAGE_DATA.findall(html)
    return json.loads(payload)


@pytest.fixture(scope="module")
def reviewed_run(noisy_run, tmp_path_factory):
    """A copy of the session's 4-step run on the synthetic set with 6 flipped labels (the one
    test_inspect inspects) and its inspection with a page of every row."""
    root = tmp_path_factory.mktemp("review")
    workdir = copy_workdir(noisy_run[0], root / "run")
    train_csv = noisy_run[1]
    result = lambda_inspect.inspect_run(workdir, grid=4, batch_size=8, html_rows=0)
    return workdir, train_csv, pathlib.Path(result["out"]), result


def test_page_data_stores_each_thumbnail_once_and_escapes_paths():
    rng = np.random.default_rng(0)
    num_rows, num_classes = 12, 7
    paths = [f"img/{i}.jpg" for i in range(num_rows)]
    paths[4] = 'a</script><script>alert("x")</script>&.jpg'
    images = rng.integers(0, 256, (num_rows, 120, 120, 3), dtype=np.uint8)
    knn = np.array([[(i + 1) % num_rows, (i + 2) % num_rows] for i in range(num_rows)])
    probs = rng.dirichlet(np.ones(num_classes), num_rows)
    order = np.array([4, 9, 0])
    data = review_page.page_data(
        order,
        paths=paths,
        labels=rng.integers(0, num_classes, num_rows),
        probs=probs,
        lam=rng.uniform(size=num_rows),
        knn=knn,
        targets=probs[order],
        images=images,
        class_names=[f"c{k}" for k in range(num_classes)],
        title="t",
        key="k",
    )
    assert [row["row"] for row in data["rows"]] == [4, 9, 0]
    assert [row["nb"] for row in data["rows"]] == [[5, 6], [10, 11], [1, 2]]
    assert data["rows"][0]["pred"] == int(np.argmax(probs[4]))
    # Shown rows and their neighbours, once each.
    assert sorted(map(int, data["thumbs"])) == [0, 1, 2, 4, 5, 6, 9, 10, 11]
    for row, side in ((4, review_page.THUMBNAIL_SIDE), (5, review_page.NEIGHBOR_SIDE)):
        thumbnail = Image.open(io.BytesIO(base64.b64decode(data["thumbs"][str(row)])))
        assert thumbnail.format == "JPEG"
        assert thumbnail.size == (side, side)  # row 5 is shown only as a neighbour

    html = review_page.render(data)
    assert html.count("</script>") == 2  # the data block's and the script's: no path ends one
    assert _embedded_data(html) == json.loads(json.dumps(data))


def test_page_loads_nothing_from_the_network(reviewed_run):
    _, _, out, _ = reviewed_run
    html = (out / "review.html").read_text()
    remote = (r"https?://", r"(?:src|href)\s*=\s*[\"']?//", r"\burl\(", r"@import", r"<link\b")
    for pattern in remote:
        assert not re.search(pattern, html, re.I), pattern
    assert not re.search(r"<script[^>]*\bsrc=|\bfetch\(|XMLHttpRequest", html)


def test_inspect_html_ranks_rows_and_leaves_the_other_outputs_alone(reviewed_run, tmp_path):
    workdir, _, out, result = reviewed_run
    ranking = pd.read_csv(out / "lambda_ranking.csv")
    data = _embedded_data((out / "review.html").read_text())
    assert result["review_html"] == {"rows": 40, "bytes": (out / "review.html").stat().st_size}
    assert [row["path"] for row in data["rows"]] == list(ranking["subDirectory_filePath"])
    np.testing.assert_allclose([row["lam"] for row in data["rows"]], ranking["lambda"], atol=6e-4)
    assert [data["classes"][row["pred"]] for row in data["rows"]] == list(ranking["predicted"])
    for row in data["rows"]:
        assert sum(row["y"]) == pytest.approx(1.0, abs=0.01)
        assert data["labels"][str(row["row"])] == data["classes"].index(
            ranking["given"][ranking["row"] == row["row"]].item()
        )

    capped = lambda_inspect.inspect_run(workdir, out=tmp_path, grid=4, batch_size=8, html_rows=5)
    assert capped["review_html"]["rows"] == 5
    assert len(_embedded_data((tmp_path / "review.html").read_text())["rows"]) == 5
    for name in ("lambda_ranking.csv", "summary.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    with pytest.raises(ValueError, match="html_rows"):
        lambda_inspect.inspect_run(workdir, out=tmp_path, html_rows=-1)


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: pathlib.Path, downloads: pathlib.Path):
        self.downloads = downloads
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # The protocol reads commands on fd 3 and writes replies to fd 4; a shell moves the
        # pipe ends there (not a preexec_fn: forking Python next to JAX's threads may deadlock).
        self.process = subprocess.Popen(
            [
                "bash",  # dash redirects only fds 0-9
                "-c",
                f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # containers (and root) have no user namespaces for it
                "--disable-gpu",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._events, self._next_id = b"", [], 0
        self.call(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(downloads),
            eventsEnabled=True,
        )
        (page,) = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.call("Network.enable", session=True)

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], deadline - time.time())
            if not ready:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + 20
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def wait_for(self, method: str, timeout: float = 20, **fields) -> dict:
        deadline = time.time() + timeout
        while True:
            for event in self._events:
                params = event.get("params", {})
                if event.get("method") == method and all(
                    params.get(k) == v for k, v in fields.items()
                ):
                    self._events.remove(event)
                    return params
            self._events.append(self._receive(deadline))

    def open(self, url: str) -> list[str]:
        """Loads `url`; returns every URL the page requested while loading."""
        self._events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return [
            event["params"]["request"]["url"]
            for event in self._events
            if event.get("method") == "Network.requestWillBeSent"
        ]

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key: str) -> None:
        """A real key press: keydown (with its character) and keyup."""
        text = {"text": key} if len(key) == 1 else {}
        self.call("Input.dispatchKeyEvent", session=True, type="keyDown", key=key, **text)
        self.call("Input.dispatchKeyEvent", session=True, type="keyUp", key=key)

    def screenshot(self, path: pathlib.Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium; .ci/run does)")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    session = Browser(tmp_path / "profile", downloads)
    yield session
    session.close()


def _set(browser, element_id: str, value) -> None:
    """Sets a filter as a user does: the control's value, then its change event."""
    field = "checked" if isinstance(value, bool) else "value"
    browser.evaluate(
        f"{{const e = document.getElementById({element_id!r}); e.{field} = {json.dumps(value)};"
        "e.dispatchEvent(new Event('change', {bubbles: true}));}"
    )


def _shown_rows(browser) -> list[int]:
    return browser.evaluate("[...document.querySelectorAll('.row')].map(r => +r.dataset.row)")


def test_review_in_chromium_filter_relabel_drop_export_apply(reviewed_run, browser, tmp_path):
    _, train_csv, out, _ = reviewed_run
    data = _embedded_data((out / "review.html").read_text())
    rows = data["rows"]
    url = (out / "review.html").as_uri()
    requested = browser.open(url)
    assert {address.split(":")[0] for address in requested} <= {"file", "data"}, requested
    assert browser.evaluate("document.getElementById('page').textContent") == (
        "page 1 / 1 · 40 rows"
    )
    _set(browser, "per-page", "10")
    assert _shown_rows(browser) == [row["row"] for row in rows[:10]]
    assert browser.evaluate("document.getElementById('page').textContent") == (
        "page 1 / 4 · 40 rows"
    )
    browser.press("ArrowRight")
    assert _shown_rows(browser) == [row["row"] for row in rows[10:20]]

    disagreeing = [row["row"] for row in rows if row["pred"] != row["given"]]
    _set(browser, "filter-disagree", True)
    assert browser.evaluate("document.getElementById('page').textContent").endswith(
        f" · {len(disagreeing)} rows"
    )
    assert _shown_rows(browser) == disagreeing[:10]
    _set(browser, "filter-disagree", False)

    # The most common given class, filtered; its first three rows relabelled, relabelled, dropped.
    given = max(range(len(data["classes"])), key=[row["given"] for row in rows].count)
    of_class = [row for row in rows if row["given"] == given]
    _set(browser, "filter-given", str(given))
    assert _shown_rows(browser) == [row["row"] for row in of_class[:10]]
    first, second = (given + 1) % 7, (given + 2) % 7
    for key in (str(first + 1), str(second + 1), "d"):  # each decision moves to the next row
        browser.press(key)
    assert browser.evaluate("document.querySelector('.row.selected').dataset.row") == str(
        of_class[3]["row"]
    )
    assert browser.evaluate("document.getElementById('counts').textContent").startswith(
        "3 decided: 0 keep · 2 relabel · 1 drop"
    )
    browser.screenshot(
        pathlib.Path(os.environ.get("LDL_JAX_TEST_ARTIFACTS", tmp_path)) / "review_page.png"
    )

    # Decisions survive a reload (localStorage), then export.
    browser.open(url)
    assert browser.evaluate("document.getElementById('counts').textContent").startswith("3 decided")
    browser.evaluate("document.getElementById('export').click()")
    browser.wait_for("Browser.downloadProgress", state="completed")
    exported = pd.read_csv(browser.downloads / "review_decisions.csv", dtype=str)
    assert exported.to_dict("list") == {
        "subDirectory_filePath": [row["path"] for row in of_class[:3]],
        "given": [str(given)] * 3,
        "decision": [f"relabel:{first}", f"relabel:{second}", "drop"],
    }

    reviewed_csv = tmp_path / "train_reviewed.csv"
    apply_review.main(
        [
            "--csv",
            str(train_csv),
            "--decisions",
            str(browser.downloads / "review_decisions.csv"),
            "--out",
            str(reviewed_csv),
        ]
    )
    source, reviewed = pd.read_csv(train_csv), pd.read_csv(reviewed_csv)
    assert len(reviewed) == len(source) - 1
    assert of_class[2]["path"] not in set(reviewed["subDirectory_filePath"])
    by_path = reviewed.set_index("subDirectory_filePath")
    assert by_path.loc[of_class[0]["path"], "expression"] == first
    assert by_path.loc[of_class[1]["path"], "expression"] == second
    assert (by_path.loc[[r["path"] for r in of_class[:2]], "expression_original"] == given).all()
    assert reviewed["knn"].str.count(";").eq(source["knn"][0].count(";")).all()
