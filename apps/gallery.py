"""The zoo's Gradio gallery (`zoo demo`): one tab per system.

Each tab is a module `zoo.apps.<name>_tab` exposing `TITLE: str` and `build() -> None`, called inside
a `gr.Tab(TITLE)` of one `gr.Blocks`. Tabs are listed in TAB_MODULES (order = tab order); any other
`apps/*_tab.py` module is appended after them, so a new system's tab shows up without an edit here.
A tab that fails to import or build becomes an error tab with the traceback: one broken system never
takes the gallery down. Tabs load their models lazily, so the gallery starts in seconds.

Limits (zoo.apps.upload_limits): uploads above MAX_UPLOAD_MB are refused while they stream in; uploads
and the files the tabs return are deleted an hour after they arrive and when the server stops. Served on
an address other than loopback, the gallery is reachable from the network with no login: launch warns.
"""
from __future__ import annotations

import importlib
import ipaddress
import os
import pkgutil
import socket
import traceback
import warnings
from pathlib import Path

# Offline and private by default: no telemetry, no version check, no hub downloads.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from .upload_limits import CACHE_MAX_AGE_SECONDS, CACHE_SWEEP_SECONDS, MAX_UPLOAD_BYTES  # noqa: E402

TAB_MODULES: list[str] = [
    "zoo.apps.chat_tab",
]

# System fonts only: the default theme would fetch Google Fonts, and the machine may be offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def discover_tab_modules() -> list[str]:
    """TAB_MODULES, then every other `*_tab` module in zoo.apps (sorted)."""
    found = sorted(f"zoo.apps.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.endswith("_tab"))
    return TAB_MODULES + [m for m in found if m not in TAB_MODULES]


def _error_tab(module_name: str, stage: str, error: BaseException) -> None:
    gr.Markdown(f"**This tab failed to {stage}** (`{module_name}`): `{type(error).__name__}: {error}`\n\n"
                "The other tabs work. Details:")
    gr.Code("".join(traceback.format_exception(error)), language="python", label="traceback")


def build_gallery(tab_modules: list[str] | None = None) -> gr.Blocks:
    modules = discover_tab_modules() if tab_modules is None else list(tab_modules)
    with gr.Blocks(title="moe-zoo gallery", analytics_enabled=False,
                   delete_cache=(CACHE_SWEEP_SECONDS, CACHE_MAX_AGE_SECONDS)) as demo:
        gr.Markdown("# moe-zoo gallery\nMixture-of-Experts models from one routing core. Each tab is one system.")
        for name in modules:
            try:
                module = importlib.import_module(name)
                title, build = str(module.TITLE), module.build
            except Exception as error:  # noqa: BLE001 (any import-time failure becomes an error tab)
                with gr.Tab(f"{name.rsplit('.', 1)[-1]} (failed)"):
                    _error_tab(name, "import", error)
                continue
            with gr.Tab(title):
                try:
                    build()
                except Exception as error:  # noqa: BLE001
                    _error_tab(name, "build", error)
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as error:
            raise ValueError(f"cannot serve on {host}:{port} ({error.strerror}); pick another --port or leave it out") from error


class NetworkExposureWarning(UserWarning):
    """The gallery listens on an address other machines can reach."""


LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost). A host name is
    resolved; one that does not resolve counts as exposed (better a needless warning than none)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def warn_if_exposed(host: str) -> None:
    if is_loopback(host):
        return
    where = "every network interface" if host in ("0.0.0.0", "::", "") else host
    warnings.warn(
        f"the gallery listens on {where}: anyone who can reach this machine on the network can use it, and "
        "there is no login. Serve on 127.0.0.1 (the default) unless that is what you want.",
        NetworkExposureWarning, stacklevel=3)


def launch(port: int | None = None, host: str = "127.0.0.1", block: bool = True,
           tab_modules: list[str] | None = None) -> tuple[gr.Blocks, str]:
    """Serve the gallery on `host`:`port` (a free port if None). With `block`, serve until Ctrl-C;
    otherwise return (demo, url) with the server running in the background (`demo.close()` stops it)."""
    warn_if_exposed(host)
    if port is None:
        port = free_port(host)
    else:
        check_port(host, port)
    demo = build_gallery(tab_modules)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True,
                            quiet=True, theme=THEME, footer_links=["api"],
                            max_file_size=MAX_UPLOAD_BYTES)
    url = url or f"http://{host}:{port}/"
    if block:
        print(f"moe-zoo gallery running at {url}  (Ctrl-C to stop)", flush=True)
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url
