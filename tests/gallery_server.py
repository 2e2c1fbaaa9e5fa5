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


def tab_fixtures(*tab_modules: str):
    """A test module's `gallery_url` and `client` fixtures (module scope) for a gallery with just these tabs:
    `gallery_url, client = gallery_server.tab_fixtures("zoo.apps.mome_tab")`."""
    import pytest

    @pytest.fixture(scope="module", name="gallery_url")
    def gallery_url_fixture():
        with served(list(tab_modules)) as url:
            yield url

    @pytest.fixture(scope="module", name="client")
    def client_fixture(gallery_url):
        return client(gallery_url)

    return gallery_url_fixture, client_fixture
