"""Real inputs with a known answer, for the real models of benchmarks/real_models.py.

Builders, each writing folders in the layouts `edgekit import --data` reads:

- `pitch_frames`: notes played by the sampled instruments of the FluidR3 General MIDI sound
  font (Debian `fluid-soundfont-gm`, MIT; recordings of real instruments and voices), rendered
  by FluidSynth (Debian `fluidsynth`) at 16 kHz, cut into CREPE frames: 1024 samples, zero mean,
  unit standard deviation (what torchcrepe's `preprocess` feeds the model), one `.npy` each.
  Every frame's true pitch is the MIDI note's equal-tempered frequency.
- `text_lines`: lines of real English prose (the licence texts Debian ships in
  /usr/share/common-licenses) rendered in real fonts (DejaVu, Liberation), cropped to the text,
  upright (class `0`) or turned by 180 degrees (class `180`), and laid out as RapidOCR's text
  direction classifier takes a crop: resized to height 48, width up to 192, padded on the right
  to 192 with mid-gray (0 after its (x - 0.5) / 0.5 normalization, as RapidOCR pads).

- `text_pages`: 320 x 320 pages of lines of that prose in those fonts, with each line's box,
  for RapidOCR's text detector.

Each builder writes a calibration set (the `--data` folder) and a disjoint test set with a
`truth.json` (file -> answer), so the scores are measured on inputs calibration never saw.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # CREPE's rate
WINDOW = 1024  # CREPE's frame: 64 ms
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# General MIDI program (0-based) -> (name, lowest note, highest note): each in its real range,
# and within CREPE's bins (C1 32.7 Hz to B7 1975.5 Hz).
INSTRUMENTS = {
    0: ("piano", 36, 96), 24: ("nylon guitar", 40, 84), 32: ("acoustic bass", 28, 55),
    40: ("violin", 55, 96), 42: ("cello", 36, 76), 52: ("choir aahs", 48, 79),
    53: ("voice oohs", 48, 79), 56: ("trumpet", 55, 82), 65: ("alto sax", 49, 81),
    71: ("clarinet", 50, 91), 73: ("flute", 60, 96), 19: ("church organ", 36, 84),
}
NOTE_SECONDS, GAP_SECONDS = 0.6, 0.3
FRAME_OFFSETS = (0.12, 0.24, 0.36, 0.48)  # seconds after the onset: the sustained part

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
LICENSES = Path("/usr/share/common-licenses")
CALIBRATION_TEXTS, TEST_TEXTS = ("GPL-3", "LGPL-2.1"), ("Apache-2.0", "MPL-2.0", "Artistic")
LINE_HEIGHT, LINE_WIDTH = 48, 192  # RapidOCR's cls_image_shape [3, 48, 192]


def midi_hz(note: int) -> float:
    """Equal-tempered frequency of MIDI note `note` (A4 = 69 = 440 Hz)."""
    return 440.0 * 2 ** ((note - 69) / 12)


def midi_file(path: Path, program: int, notes: list[int]) -> None:
    """A one-track standard MIDI file: `program`, then each note for NOTE_SECONDS, then a gap."""
    ticks = 480  # per quarter note; at the default 120 bpm a quarter is 0.5 s

    def var(n: int) -> bytes:  # MIDI variable-length quantity
        out = [n & 0x7F]
        while n > 127:
            n >>= 7
            out.append(0x80 | (n & 0x7F))
        return bytes(reversed(out))

    on, off = round(NOTE_SECONDS / 0.5 * ticks), round(GAP_SECONDS / 0.5 * ticks)
    events = var(0) + bytes([0xC0, program])
    for note in notes:
        events += var(0) + bytes([0x90, note, 100]) + var(on) + bytes([0x80, note, 0])
        events += var(off) + bytes([0xB0, 123, 0])  # all notes off: no tail into the next
    events += var(0) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks)
                     + b"MTrk" + struct.pack(">I", len(events)) + events)


def render(midi: Path, out: Path) -> np.ndarray:
    """FluidSynth renders `midi` at 16 kHz, no reverb or chorus -> mono float64 samples."""
    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6",
                    "-r", str(SAMPLE_RATE), "-F", str(out), str(SOUNDFONT), str(midi)],
                   check=True, capture_output=True)
    with wave.open(str(out)) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
        return data.reshape(-1, w.getnchannels()).mean(axis=1) / 32768


def crepe_frame(samples: np.ndarray) -> np.ndarray:
    """(1024,) audio -> (1024,) float32 as torchcrepe.preprocess normalizes it (torch's std
    is the unbiased one)."""
    frame = samples - samples.mean()
    return (frame / max(frame.std(ddof=1), 1e-10)).astype(np.float32)


def pitch_frames(out: Path) -> dict:
    """Calibration frames (out/calibration/*.npy) and test frames (out/test/*.npy + truth.json).

    Every other semitone of each instrument's range goes to calibration, the rest to the test
    set. Frames quieter than 1% of the loudest frame of their instrument are skipped.
    """
    if not SOUNDFONT.is_file():
        raise SystemExit(f"{SOUNDFONT} is missing: apt-get install fluidsynth fluid-soundfont-gm")
    shutil.rmtree(out, ignore_errors=True)
    (out / "calibration").mkdir(parents=True)
    (out / "test").mkdir()
    truth, counts = {}, {"calibration": 0, "test": 0}
    for program, (name, low, high) in INSTRUMENTS.items():
        notes = list(range(low, high + 1))
        midi = out / f"gm{program}.mid"
        midi_file(midi, program, notes)
        audio = render(midi, out / f"gm{program}.wav")
        frames = []
        for i, note in enumerate(notes):
            onset = i * (NOTE_SECONDS + GAP_SECONDS)
            for offset in FRAME_OFFSETS:
                start = round((onset + offset) * SAMPLE_RATE)
                frames.append((note, offset, audio[start:start + WINDOW]))
        loudest = max(np.sqrt(np.mean(f ** 2)) for _, _, f in frames)
        for note, offset, samples in frames:
            if len(samples) < WINDOW or np.sqrt(np.mean(samples ** 2)) < 0.01 * loudest:
                continue
            split = "calibration" if note % 2 == 0 else "test"
            file = f"gm{program:03d}-n{note}-{round(offset * 1000):03d}ms.npy"
            np.save(out / split / file, crepe_frame(samples))
            counts[split] += 1
            if split == "test":
                truth[file] = {"instrument": name, "note": note, "hz": round(midi_hz(note), 4)}
        (out / f"gm{program}.mid").unlink()
        (out / f"gm{program}.wav").unlink()
    (out / "test" / "truth.json").write_text(json.dumps(truth, indent=1))
    return {"frames": counts, "instruments": [n for n, _, _ in INSTRUMENTS.values()],
            "soundfont": str(SOUNDFONT)}


def fonts() -> list[Path]:
    """The regular, bold and italic TrueType fonts of DejaVu and Liberation on this machine."""
    found = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.glob("*.ttf")
                   if "ExtraLight" not in p.name)
    if not found:
        raise SystemExit("no DejaVu or Liberation fonts: apt-get install fonts-dejavu-core "
                         "fonts-liberation")
    return found


def phrases(names: tuple[str, ...], count: int, rng: random.Random) -> list[str]:
    """`count` runs of 2-8 consecutive words from the named licence texts."""
    words = []
    for name in names:
        words += (LICENSES / name).read_text(encoding="utf-8", errors="replace").split()
    out = []
    while len(out) < count:
        n = rng.randint(2, 8)
        start = rng.randrange(len(words) - n)
        text = " ".join(words[start:start + n])
        if sum(c.isalpha() for c in text) >= 6:
            out.append(text)
    return out


def line_image(text: str, font: Path, rng: random.Random, turned: bool):
    """One text line as RapidOCR's classifier sees a detected crop: (192 x 48) RGB, gray pad."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    face = ImageFont.truetype(str(font), rng.randint(18, 40))
    ink = tuple(rng.randint(0, 90) for _ in range(3))
    paper = tuple(rng.randint(190, 255) for _ in range(3))
    left, top, right, bottom = face.getbbox(text)
    margin = rng.randint(2, 8)
    image = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), paper)
    ImageDraw.Draw(image).text((margin - left, margin - top), text, font=face, fill=ink)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if turned:
        image = image.rotate(180)
    width = min(LINE_WIDTH, int(np.ceil(LINE_HEIGHT * image.width / image.height)))
    line = Image.new("RGB", (LINE_WIDTH, LINE_HEIGHT), (128, 128, 128))
    line.paste(image.resize((width, LINE_HEIGHT), Image.Resampling.BILINEAR), (0, 0))
    return line


def text_lines(out: Path, calibration: int = 200, test: int = 600, seed: int = 0) -> dict:
    """Class folders out/calibration/{0,180}/ and out/test/{0,180}/ (+ test/truth.json).

    Half of each set is turned by 180 degrees. Calibration and test lines come from different
    licence texts, so no line is in both.
    """
    rng = random.Random(seed)
    faces = fonts()
    shutil.rmtree(out, ignore_errors=True)
    truth = {}
    for split, names, count in (("calibration", CALIBRATION_TEXTS, calibration),
                                ("test", TEST_TEXTS, test)):
        for label in ("0", "180"):
            (out / split / label).mkdir(parents=True)
        for i, text in enumerate(phrases(names, count, rng)):
            label = "180" if i % 2 else "0"
            font = rng.choice(faces)
            file = f"{label}/{i:04d}.png"
            line_image(text, font, rng, label == "180").save(out / split / file)
            if split == "test":
                truth[file] = {"label": label, "text": text, "font": font.name}
    (out / "test" / "truth.json").write_text(json.dumps(truth, indent=1))
    return {"lines": {"calibration": calibration, "test": test}, "fonts": len(faces),
            "texts": {"calibration": list(CALIBRATION_TEXTS), "test": list(TEST_TEXTS)}}


def page_image(rng: random.Random, words: list[str], faces: list[Path], size: int):
    """A `size` x `size` RGB page of 3-8 text lines in random fonts -> (image, line boxes).

    Each box is (left, top, right, bottom) of a line's ink, in pixels.
    """
    from PIL import Image, ImageDraw, ImageFont

    paper = tuple(rng.randint(170, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    boxes, y = [], rng.randint(4, 30)
    for _ in range(rng.randint(3, 8)):
        face = ImageFont.truetype(str(rng.choice(faces)), rng.randint(14, 30))
        start = rng.randrange(len(words) - 8)
        text = " ".join(words[start:start + rng.randint(1, 6)])
        x = rng.randint(4, size // 3)
        box = draw.textbbox((x, y), text, font=face)
        if box[3] > size - 4:
            break
        if box[2] > size - 4:  # cut the line at the page's edge, keeping whole words
            while " " in text and draw.textbbox((x, y), text, font=face)[2] > size - 4:
                text = text.rsplit(" ", 1)[0]
            box = draw.textbbox((x, y), text, font=face)
            if box[2] > size - 4:
                continue
        draw.text((x, y), text, font=face, fill=tuple(rng.randint(0, 90) for _ in range(3)))
        boxes.append(list(box))
        y = box[3] + rng.randint(6, 30)
    return image, boxes


def text_pages(out: Path, calibration: int = 40, test: int = 100, size: int = 320,
               seed: int = 0) -> dict:
    """Flat folders out/calibration/*.png and out/test/*.png (+ test/truth.json: line boxes).

    Pages of lines of licence text (RapidOCR's text detector finds the lines); calibration and
    test pages take their words from different licence texts.
    """
    rng = random.Random(seed)
    faces = fonts()
    shutil.rmtree(out, ignore_errors=True)
    truth = {}
    for split, names, count in (("calibration", CALIBRATION_TEXTS, calibration),
                                ("test", TEST_TEXTS, test)):
        (out / split).mkdir(parents=True)
        words = []
        for name in names:
            words += (LICENSES / name).read_text(encoding="utf-8", errors="replace").split()
        for i in range(count):
            image, boxes = page_image(rng, words, faces, size)
            image.save(out / split / f"{i:04d}.png")
            if split == "test":
                truth[f"{i:04d}.png"] = {"boxes": boxes}
    (out / "test" / "truth.json").write_text(json.dumps(truth, indent=1))
    return {"pages": {"calibration": calibration, "test": test}, "size": size,
            "lines": sum(len(t["boxes"]) for t in truth.values()), "fonts": len(faces)}
