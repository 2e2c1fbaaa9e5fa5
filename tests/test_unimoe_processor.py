"""UniMoeProcessor (placeholder counts per image / video / 30 s of audio, AutoProcessor round trip, errors),
the video frame sampling and pooling of zoo.multimodal.video, and the Whisper-decoder Q-Former."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import zoo  # noqa: F401
from tests.tiny_unimoe import FRAMES, IMAGE_TOKENS, QUERIES, WHISPER, clip, image, tiny_model, tiny_processor, video
from zoo.models.unimoe import UniMoeProcessor
from zoo.multimodal.qformer import build_whisper_qformer
from zoo.multimodal.video import mean_pool_frames, sample_frame_indices, video_frames

pytestmark = pytest.mark.usefixtures("single_thread")


def test_placeholders_are_expanded_to_the_token_counts_of_each_input():
    processor = tiny_processor()
    text = processor.prompt("describe", media=("image", "video", "audio", "audio"))
    batch = processor(text=text, images=image(), videos=[video(7)], audio=[clip(0.5), clip(31.0, seed=1)],
                      sampling_rate=16_000)
    ids = batch["input_ids"][0]
    assert (ids == processor.image_token_id).sum() == IMAGE_TOKENS
    assert (ids == processor.video_token_id).sum() == IMAGE_TOKENS  # the frames pool into one image's tokens
    # 0.5 s: one chunk; 31 s: two 30 s chunks -> QUERIES tokens per chunk, in order
    assert (ids == processor.audio_token_id).sum() == QUERIES * 3
    assert batch["chunks_per_audio"].tolist() == [1, 2] and batch["input_features"].shape == (3, 80, 3000)
    assert batch["pixel_values"].shape == (1, 3, 32, 32) and batch["pixel_values_videos"].shape == (1, FRAMES, 3, 32, 32)
    # the sampled frames are frames 1 and 5 of 7 (segment centres), preprocessed like images
    frames = video(7)
    want = processor.image_processor([frames[1], frames[5]])["pixel_values"]
    torch.testing.assert_close(batch["pixel_values_videos"][0], want)
    model = tiny_model(processor)
    assert model.num_image_tokens() == IMAGE_TOKENS
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[1] == ids.shape[0]


def test_auto_processor_round_trip_gives_the_same_inputs(tmp_path):
    processor = tiny_processor(max_video_seconds=3.0)
    tiny_model(processor).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is UniMoeProcessor
    assert (loaded.num_image_tokens, loaded.num_audio_query_tokens, loaded.num_video_frames, loaded.max_video_seconds) == \
        (IMAGE_TOKENS, QUERIES, FRAMES, 3.0)
    assert loaded.image_processor.image_size == 32 and loaded.image_processor.image_mean == [0.5, 0.5, 0.5]
    text = processor.prompt("describe", media=("video", "audio"))
    a = processor(text=text, videos=video(4), audio=clip(0.3), sampling_rate=16_000)
    b = loaded(text=text, videos=video(4), audio=clip(0.3), sampling_rate=16_000)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_refused_naming_the_problem():
    processor = tiny_processor(max_video_frames=10, max_video_seconds=2.0)
    with pytest.raises(ValueError, match=r"1 video input\(s\) given but the text has 0 <video> placeholder"):
        processor(text="hello", videos=[video()])
    with pytest.raises(ValueError, match=r"0 image input\(s\) given but the text has 1 <image> placeholder"):
        processor(text="<image> hello")
    with pytest.raises(ValueError, match=r"video 0 has 11 frames, more than the maximum of 10 \(max_video_frames\)"):
        processor(text="<video>", videos=[video(11)])
    with pytest.raises(ValueError, match=r"video 0 is 2.5 s long at 2 fps, more than the maximum of 2 s"):
        processor(text="<video>", videos=[video(5)], video_fps=2)
    with pytest.raises(ValueError, match=r"a video array must be \[frames, height, width, 3\] uint8"):
        processor(text="<video>", videos=[np.zeros((4, 8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="decode video files such as mp4 to frames first"):
        processor(text="<video>", videos=[b"not a video"])
    with pytest.raises(ValueError, match="UniMoeProcessor.num_video_frames must be a positive integer"):
        tiny_processor(num_video_frames=0)


def test_an_animated_gif_is_a_video():
    frames = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    read = video_frames(buffer.getvalue())
    assert len(read) == 4 and [f.getpixel((0, 0))[0] for f in read] == [0, 40, 80, 120]


def test_frame_sampling_and_pooling():
    assert sample_frame_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_frame_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # short clips repeat frames, in order
    features = torch.arange(2 * 3 * 4, dtype=torch.float).view(6, 1, 4)  # 2 videos x 3 frames
    torch.testing.assert_close(mean_pool_frames(features, 3), torch.stack([features[:3].mean(0), features[3:].mean(0)]))
    with pytest.raises(ValueError, match=r"\[n_videos \* 4 frames, tokens, hidden\]"):
        mean_pool_frames(features, 4)


def test_the_qformer_is_a_whisper_decoder_over_learnable_queries():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    torch.manual_seed(0)
    qformer = build_whisper_qformer(WHISPER, num_query_tokens=5, out_features=32).eval()
    assert qformer.decoder.embed_tokens is None and qformer.query_tokens.shape == (1, 5, 16)
    reference = WhisperDecoder(WhisperConfig(**WHISPER["config"])).eval()
    reference.load_state_dict(qformer.decoder.state_dict(), strict=False)  # everything but the unused token table
    frames = torch.randn(2, 12, 16)
    with torch.no_grad():
        hidden = reference(inputs_embeds=qformer.query_tokens.expand(2, -1, -1), encoder_hidden_states=frames).last_hidden_state
        torch.testing.assert_close(qformer(frames), qformer.projector(hidden))
        # trimmed chunks of different lengths: each as if alone, padding never attended to
        ragged = qformer(frames, torch.tensor([12, 7]))
        torch.testing.assert_close(ragged[1], qformer(frames[1:2, :7])[0])
    with pytest.raises(ValueError, match=r"expects encoder frames \[chunks, frames, 16\]"):
        qformer(torch.randn(2, 12, 8))
    with pytest.raises(ValueError, match=r"WhisperQFormer.num_query_tokens \(500\) exceeds the decoder's 448 positions"):
        build_whisper_qformer(WHISPER, num_query_tokens=500, out_features=32)


def test_the_packaged_whisper_decoder_becomes_the_qformer():
    from zoo.integrations.whisper_weights import load_whisper

    spec = {"kind": "whisper", "name": "tiny.en", "weights": "packaged"}
    qformer = build_whisper_qformer(spec, num_query_tokens=50, out_features=8)
    decoder = load_whisper("tiny.en", progress=False)[0].model.decoder
    want = {k: v for k, v in decoder.state_dict().items() if not k.startswith("embed_tokens")}
    got = qformer.decoder.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
