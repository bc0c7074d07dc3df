"""The first tutorial in JupyterLab, in a real headless browser: run it, upload an image through
its widget, and see the predictions on the page."""

import os

import pytest

from tests.support import browser
from tests.support.jupyter_app import TOKEN, Jupyter
from tests.support.notebooks import OFFLINE, checkout

#: The notebook's kernel is started, connected and idle: cells run now reach it.
KERNEL_CONNECTED_AND_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return Boolean(kernel && kernel.connectionStatus === "connected" && kernel.status === "idle");
}"""


#: The kernel's keys, asked outside any cell (an execute request of the page's own), so no
#: cell's output holds them.
KERNEL_KEYS = """async () => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    let text = "";
    const future = kernel.requestExecute({
        code: "print(*__import__('nbserve').session.current.keys.values())",
        store_history: false});
    future.onIOPub = (msg) => { if (msg.header.msg_type === "stream") text += msg.content.text; };
    await future.done;
    return text;
}"""


@pytest.fixture
def lab(tmp_path):
    folder = checkout(tmp_path)
    lab = Jupyter(tmp_path, tmp_path / "runtime", {**os.environ, **OFFLINE}, app="lab",
                  args=["--LabApp.news_url=None",
                        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                        "--LabApp.expose_app_in_browser=True"], startup_seconds=90)
    yield lab.url, folder
    lab.stop()


@pytest.mark.timeout(600)
def test_run_the_first_notebook_and_upload_an_image_through_its_widget(lab):
    url, folder = lab
    with browser.page() as page, browser.screenshot_on_failure(page, "jupyterlab-failure.png"):
        page.goto(f"{url}lab/tree/notebooks/01-densenet161-workflow.ipynb?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # Run > Run All Cells, as the command behind the menu (a menu click can land while the
        # page is still settling).
        page.wait_for_function(KERNEL_CONNECTED_AND_IDLE, timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        upload = page.locator("button.widget-upload")
        upload.wait_for(timeout=300_000)
        with page.expect_file_chooser() as chooser:  # the dialog the button opens
            upload.click()
        chooser.value.set_files(str(folder / "photos" / "cat.jpg"))
        row = page.locator(".nbserve-upload-row:has-text('cat.jpg') .nbserve-scores")
        row.wait_for(timeout=120_000)
        row.scroll_into_view_if_needed()
        uploaded = row.locator("td:first-child").all_inner_texts()
        # The same photo through %predict, earlier in the notebook: the first table of scores.
        predicted = page.locator(".nbserve-scores").first.locator("td:first-child").all_inner_texts()
        browser.screenshot(page, "jupyterlab-upload-widget.png")
        assert page.locator("text=OFFLINE: could not download").count() >= 1
        # Random weights say so beside their answer.
        assert page.locator(".nbserve-low-confidence").count() >= 1
        # The status table's URL column is in sight in a 1280-pixel window, file browser open.
        assert page.locator(".jp-FileBrowser").first.is_visible()
        status = page.locator("table.nbserve-status").first
        status.scroll_into_view_if_needed()
        url_cell = status.locator("tbody tr td:nth-child(2)").first
        url_cell.wait_for(state="visible")  # JupyterLab renders a cell once it is in view
        box = url_cell.bounding_box()
        assert "/predictions/densenet161" in url_cell.text_content()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1280, box
        browser.screenshot(page, "jupyterlab-status-table.png")
        keys = page.evaluate(KERNEL_KEYS).split()
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        saved_path = folder / "01-densenet161-workflow.ipynb"
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                               timeout=30_000)
    saved = saved_path.read_text()
    assert len(uploaded) == 5 and uploaded == predicted
    assert len(keys) == 3 and "nbserve-status" in saved  # saved with its outputs...
    assert not [key for key in keys if key in saved]  # ...and no key among them
