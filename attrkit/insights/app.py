"""The explorer as a local web app, served by Voilà (no JavaScript build: Voilà ships the widget code).

How the visualizer reaches Voilà's kernel: :func:`serve` pickles it with ``cloudpickle`` (so models and
functions defined in ``__main__`` or a notebook travel too) into a temporary folder, next to a one-cell
notebook that loads it and calls ``render()``; a ``voila`` process started with this Python serves that
notebook on 127.0.0.1 with a random token in the URL. :meth:`InsightsServer.stop` ends the process (and its
kernels) and removes the folder; so does the end of the Python session.

Offline: Voilà serves the widget JavaScript itself. Its ``lab`` template also links Font Awesome's styles from a
CDN, although its own bundle already carries them; :func:`serve` uses a copy of that template without the two
links (:func:`_local_template`), so the page loads nothing from outside (the browser test refuses every
non-local request).
Needs ``voila`` and ``cloudpickle`` (``pip install voila cloudpickle``).
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from pathlib import Path

_CELL = """import pathlib, warnings
import cloudpickle
warnings.filterwarnings("ignore")
visualizer = cloudpickle.loads(pathlib.Path("visualizer.pkl").read_bytes())
visualizer.render()"""


class InsightsServer:
    """A running Voilà server: ``url`` (with its token), ``port``, ``log`` (its output file), ``stop()``;
    also a context manager."""

    def __init__(self, process: subprocess.Popen, url: str, port: int, folder: Path):
        self.process, self.url, self.port, self.folder = process, url, port, folder
        self.log = folder / "voila.log"
        atexit.register(self.stop)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """Stop the server and its kernels (their process group), and remove the temporary folder."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGTERM)  # the group started for this server, nothing else
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"InsightsServer({self.url!r}, {'running' if self.running() else 'stopped'})"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_listening(server: InsightsServer, host: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"Voilà exited with code {server.process.returncode}:\n{server.log.read_text()[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, server.port)) == 0:
                return
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"Voilà did not start listening on port {server.port} within {timeout} s")


TEMPLATE = "attrkit-lab"


def _local_template(root: Path) -> bool:
    """Write Voilà's ``lab`` template, minus its CDN links, as template :data:`TEMPLATE` under ``root`` (a
    Jupyter data directory for ``JUPYTER_PATH``); False if the ``lab`` template cannot be found."""
    from jupyter_core.paths import jupyter_path

    for base in jupyter_path("voila", "templates"):
        source = Path(base) / "lab" / "index.html.j2"
        if source.exists():
            break
    else:
        return False
    lines = [line for line in source.read_text().splitlines(keepends=True)
             if not ("<link" in line and "https://" in line)]
    target = root / "voila" / "templates" / TEMPLATE
    target.mkdir(parents=True, exist_ok=True)
    (target / "index.html.j2").write_text("".join(lines))
    (target / "conf.json").write_text('{"base_template": "lab"}\n')
    return True


def serve(visualizer, port: int | None = None, open_browser: bool = False, bind_all: bool = False,
          blocking: bool = False, debug: bool = False, timeout: float = 60) -> InsightsServer:
    """Serve ``visualizer.render()`` as a web app at ``http://127.0.0.1:PORT/?token=...`` (``bind_all``: on
    every interface). ``port`` None picks a free one; ``open_browser`` opens the page; ``blocking`` waits until
    Ctrl-C, then stops; ``debug`` shows tracebacks in the page. Returns the :class:`InsightsServer`."""
    import importlib.util
    missing = [name for name in ("voila", "cloudpickle") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"serve() needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    import cloudpickle
    import nbformat

    host = "0.0.0.0" if bind_all else "127.0.0.1"
    folder = Path(tempfile.mkdtemp(prefix="attrkit-insights-"))
    (folder / "visualizer.pkl").write_bytes(cloudpickle.dumps(visualizer))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "attrkit_insights.ipynb")
    port, token = port or _free_port(host), secrets.token_urlsafe(16)
    # the kernel gets this process's import path: this attrkit (installed or not) and the modules that
    # cloudpickle refers to by name (a test module, a script's neighbours) import there as they do here
    paths = [str(Path(__file__).resolve().parents[2])] + [p or os.getcwd() for p in sys.path]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
    command = [sys.executable, "-m", "voila", "attrkit_insights.ipynb", f"--port={port}", f"--Voila.ip={host}",
               f"--token={token}", "--no-browser", f"--show_tracebacks={debug}", "--Voila.log_level=WARN"]
    if _local_template(folder / "jupyter"):
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder / "jupyter"), os.environ.get("JUPYTER_PATH")]))
        command.append(f"--template={TEMPLATE}")
    with open(folder / "voila.log", "wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = InsightsServer(process, f"http://127.0.0.1:{port}/?token={token}", port, folder)
    _wait_listening(server, "127.0.0.1", timeout)
    print(f"attrkit insights: {server.url}")
    if open_browser:
        webbrowser.open(server.url)
    if blocking:
        if threading.current_thread() is threading.main_thread():  # `kill` stops the server too, not only Ctrl-C
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return server
