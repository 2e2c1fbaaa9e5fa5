"""One running gallery per test module, for the tab tests: `served(tab_modules)` launches the gallery with
just those tabs and closes it afterwards; `client(url)` is gradio_client on it."""
import contextlib


@contextlib.contextmanager
def served(tab_modules: list[str]):
    from zoo.apps import gallery

    demo, url = gallery.launch(block=False, tab_modules=tab_modules)
    try:
        yield url
    finally:
        demo.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)
