"""The gallery's limits (issue 14): upload size, upload clean-up, image pixels read from the header before
any decoding, audio length, the warning for a network-facing --host, and concurrent chat replies equal to
sequential ones. Servers are launched with only the tabs a test needs; no test loads shipped weights."""
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gallery_server import client, served
from PIL import Image, ImageFile
from tiny_decoders import tiny_decoder

from zoo.apps import chat_tab, gallery, mofme_tab, unimoe_tab, upload_limits, vl_ui
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.upcycling.plan import UpcyclePlan

HUGE = 10_000  # a 10000 x 10000 header: 300 MB of RGB if it were decoded


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header says width x height (8-bit RGB): one scanline of data follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width)))
                     + chunk(b"IEND", b""))
    return path


def gif_claiming(path: Path, width: int, height: int) -> Path:
    """A GIF89a whose logical screen and one frame are width x height; the frame holds one pixel of LZW data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6)  # 2-colour global table
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(screen + frame + b"\x3b")
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding of an image file (PIL's ImageFile.load: convert, numpy, thumbnail all call it) fails."""
    calls = []

    def refuse(self):
        calls.append(self.size)
        raise AssertionError(f"decoded a {self.size[0]}x{self.size[1]} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    return calls


# -- upload size and clean-up ------------------------------------------------------------------------
def upload(url: str, path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=60)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def test_an_upload_above_the_limit_is_refused_with_a_message_and_leaves_no_file(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (upload_limits.MAX_UPLOAD_BYTES + 1))
    with served([]) as url:
        folder = Path(gr.utils.get_upload_folder())
        before = files_under(folder)
        response = upload(url, big)
        assert response.status_code == 413
        assert f"maximum allowed size of {upload_limits.MAX_UPLOAD_BYTES} bytes" in response.text
        assert files_under(folder) == before  # the partial upload is gone too
        config = httpx.get(f"{url}config", timeout=10).json()
        assert config["max_file_size"] == upload_limits.MAX_UPLOAD_BYTES  # the browser refuses it before sending
    # a file that reached a handler another way (the API fetches URLs) is measured again
    sparse = tmp_path / "sparse.png"
    with sparse.open("wb") as f:
        f.truncate(upload_limits.MAX_UPLOAD_BYTES + 1)
    with pytest.raises(gr.Error, match=f"above the gallery's upload limit of {upload_limits.MAX_UPLOAD_MB} MB"):
        vl_ui.run("moiie", str(sparse), "what shape is it?")


def test_uploads_are_deleted_after_their_age_and_when_the_server_stops(tmp_path, monkeypatch):
    small = tmp_path / "small.txt"
    small.write_text("x" * 1000)
    monkeypatch.setattr(gallery, "CACHE_SWEEP_SECONDS", 1)
    monkeypatch.setattr(gallery, "CACHE_MAX_AGE_SECONDS", 1)
    with served([]) as url:
        (swept,) = upload(url, small).json()
        assert Path(swept).is_file()
        deadline = time.monotonic() + 10
        while Path(swept).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(swept).exists(), "an upload older than the maximum age was not deleted"
    monkeypatch.undo()  # the shipped ages: an upload stays while the server runs, and goes with it
    with served([]) as url:
        (kept,) = upload(url, small).json()
        time.sleep(1.5)
        assert Path(kept).is_file()
    assert not Path(kept).exists(), "the server stopped and left an upload behind"


# -- pixels from the header, before decoding -----------------------------------------------------------
def test_the_pixel_check_reads_the_header_only(tmp_path, no_decoding):
    png = png_claiming(tmp_path / "huge.png", HUGE, HUGE)
    with pytest.raises(ValueError, match=r"10000x10000 = 100.0 MP, above this tab's limit of 16.8 MP"):
        upload_limits.check_image_file(png)
    assert upload_limits.check_image_file(png_claiming(tmp_path / "ok.png", 4096, 4096)) == (4096, 4096)
    with pytest.raises(ValueError, match="is far above the gallery's limit"):  # beyond PIL's own bomb guard
        upload_limits.check_image_file(png_claiming(tmp_path / "bomb.png", 20_000, 20_000))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image PIL can read"):
        upload_limits.check_image_file(tmp_path / "text.png")
    assert no_decoding == []


def test_mofme_tab_refuses_a_huge_photo_through_the_server_without_decoding_it(tmp_path, monkeypatch, no_decoding):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    def no_model():
        raise AssertionError("the model loaded before the photo was checked")

    png = png_claiming(tmp_path / "huge.png", HUGE, HUGE)
    monkeypatch.setattr(mofme_tab, "load_model", no_model)
    with served(["zoo.apps.mofme_tab"]) as url:
        with pytest.raises(AppError, match=r"10000x10000 = 100.0 MP, above this tab's limit of 4.2 MP"):
            client(url).predict(handle_file(str(png)), None, "Snow", 0.5, 0, False, api_name="/restore")
    assert no_decoding == []


def test_vision_language_and_unimoe_tabs_refuse_huge_images_without_decoding(tmp_path, no_decoding):
    png = str(png_claiming(tmp_path / "huge.png", HUGE, HUGE))
    with pytest.raises(gr.Error, match=r"10000x10000 = 100.0 MP, above this tab's limit of 16.8 MP"):
        vl_ui.run("moiie", png, "what shape is it?")
    with pytest.raises(gr.Error, match=r"10000x10000 = 100.0 MP, above this tab's limit of 16.8 MP"):
        unimoe_tab.ask("what shape is it?", png, None, None)
    gif = str(gif_claiming(tmp_path / "huge.gif", 9000, 9000))
    with pytest.raises(gr.Error, match=r"video frame is 9000x9000 = 81.0 MP, above this tab's limit of 64.0 MP"):
        unimoe_tab.ask("what moves?", None, gif, None)
    assert no_decoding == []


def test_a_gif_with_too_many_frames_is_refused_while_counting(tmp_path):
    frames = [Image.fromarray(np.full((16, 16), i % 256, np.uint8)) for i in range(701)]
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(gr.Error, match="more than 600 frames of 16x16"):
        unimoe_tab.ask("what moves?", None, str(tmp_path / "long.gif"), None)


def test_image_inputs_reach_the_handlers_as_undecoded_files():
    """gradio decodes an upload itself unless the component takes a file path with no mode conversion."""
    with gr.Blocks() as demo:
        mofme_tab.build()
        unimoe_tab.build()
        vl_ui.build_tab("moiie", "MoIIE")
    images = [b for b in demo.blocks.values() if isinstance(b, gr.Image) and b.interactive is not False]
    assert len(images) == 3
    assert all(image.type == "filepath" and image.image_mode is None for image in images)
    texts = " ".join(b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str))
    assert texts.count(f"uploads up to {upload_limits.MAX_UPLOAD_MB} MB") == 3
    assert "4.2 MP" in texts and "16.8 MP" in texts and "at most 30 s" in texts


def test_unimoe_refuses_long_audio_from_its_header(tmp_path, monkeypatch):
    import soundfile as sf

    sf.write(tmp_path / "long.wav", np.zeros(31 * 8000, np.int16), 8000)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("the audio was decoded"))
    with pytest.raises(gr.Error, match=r"31.0 s long, more than the maximum of 30 s"):
        unimoe_tab.ask(None, None, None, str(tmp_path / "long.wav"))


# -- --host ------------------------------------------------------------------------------------------
def test_a_network_facing_host_is_warned_about():
    assert all(map(gallery.is_loopback, ["127.0.0.1", "127.0.0.2", "localhost", "::1"]))
    assert not any(map(gallery.is_loopback, ["0.0.0.0", "::", "192.168.1.5", "no-such-host.invalid"]))
    with pytest.warns(gallery.NetworkExposureWarning, match="every network interface.*no login"):
        demo, _ = gallery.launch(host="0.0.0.0", block=False, tab_modules=[])
    demo.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", gallery.NetworkExposureWarning)
        demo, _ = gallery.launch(block=False, tab_modules=[])
    demo.close()


# -- concurrent chat -----------------------------------------------------------------------------------
@pytest.fixture
def tiny_chat(monkeypatch):
    """The chat tab on a tiny random XMoE with SmolLM2's tokenizer (its chat template), routers moved so
    that routing differs between prompts; generate() is wrapped so a test can hold calls at a barrier."""
    from transformers import AutoTokenizer

    from zoo.integrations.assets import load_smollm2, smollm2_cache_path

    folder = smollm2_cache_path()
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer.json").is_file() else load_smollm2(progress=False)[1]
    plan = UpcyclePlan(num_experts=4, router="threshold", threshold=0.6, experts="split", router_init_std=0.5, seed=0)
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder("llama", vocab_size=len(tokenizer), max_position_embeddings=512), plan).eval()
    gate = {"barrier": None}
    generate = model.generate

    def held_generate(*args, **kwargs):
        if gate["barrier"] is not None:
            gate["barrier"].wait()  # every concurrent request must be generating at the same time
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", held_generate)
    monkeypatch.setattr(chat_tab, "_state", {"model": model, "tokenizer": tokenizer, "note": "tiny XMoE"})
    return gate


def test_concurrent_chat_replies_equal_sequential_ones(tiny_chat):
    torch.set_num_threads(2)
    prompts = [f"Tell me about the number {i}." for i in range(chat_tab.CHAT_CONCURRENCY)]
    with served(["zoo.apps.chat_tab"]) as url:
        app = client(url)
        alone = [app.predict(p, [], 12, 0.0, api_name="/chat") for p in prompts]
        tiny_chat["barrier"] = threading.Barrier(len(prompts), timeout=20)
        jobs = [app.submit(p, [], 12, 0.0, api_name="/chat") for p in prompts]
        together = [job.result(timeout=60) for job in jobs]
    for (history, _, _, routing, stats), (history2, _, _, routing2, stats2) in zip(alone, together):
        assert history2 == history and routing2 == routing and stats2 == stats
    assert len({str(r[3]["top_expert"]) for r in alone}) == len(prompts)  # a mix-up between requests would show
