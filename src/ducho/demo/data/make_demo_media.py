#!/usr/bin/env python3
"""Regenerate the bundled demo media (images for demo 1, audio clips for demo 2).

This script is NOT imported by the ``ducho`` package; it only documents, and can re-create, how the files
under ``visual/images/`` and ``audio/clips/`` were made. The item descriptions (``visual/items.tsv``,
``audio/items.tsv``) were written by hand and are not touched here.

Usage (from anywhere)::

    python src/ducho/demo/data/make_demo_media.py            # images and audio
    python src/ducho/demo/data/make_demo_media.py images     # images only
    python src/ducho/demo/data/make_demo_media.py audio      # audio only

Requirements (only for regenerating, never for using ducho):

* images: numpy, pillow, scikit-image (the photos are read from the files shipped inside the
  scikit-image wheel; nothing is downloaded);
* audio: numpy, soundfile (libsndfile with Ogg/Vorbis), and on PATH ``fluidsynth`` and ``espeak-ng``,
  plus the General MIDI soundfont TimGM6mb (Debian:
  ``apt-get install fluidsynth timgm6mb-soundfont espeak-ng``).

The MIDI files are written by the tiny standard-MIDI-file writer below (no third-party MIDI library), rendered
with fluidsynth at 22050 Hz, down-mixed to mono, trimmed to a fixed length with a short fade-out, peak-normalised
and stored as Ogg/Vorbis. The images come out byte-identical on every run; re-rendered audio sounds the same but is
not byte-identical (FluidSynth dithers, and versions of fluidsynth/espeak-ng/libvorbis differ).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "visual" / "images"
CLIP_DIR = HERE / "audio" / "clips"
SOUNDFONT = Path(os.environ.get("DUCHO_DEMO_SF2", "/usr/share/sounds/sf2/TimGM6mb.sf2"))
SAMPLE_RATE = 22050
MAX_SIDE = 320
JPEG_QUALITY = 85

# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------

# id -> (skimage.data function, output format). Only images whose skimage docstring states a public-domain / CC0 /
# "no known copyright restrictions" status are used, plus the scikit-image logo (BSD-3-Clause, part of the
# scikit-image distribution) as an RGBA PNG.
IMAGES = {
    "astronaut": ("astronaut", "jpg"),
    "cat": ("chelsea", "jpg"),
    "coffee": ("coffee", "jpg"),
    "rocket": ("rocket", "jpg"),
    "hubble": ("hubble_deep_field", "jpg"),
    "retina": ("retina", "jpg"),
    "ihc": ("immunohistochemistry", "jpg"),
    "camera": ("camera", "jpg"),  # grayscale
    "coins": ("coins", "jpg"),  # grayscale
    "brick": ("brick", "jpg"),  # grayscale
    "grass": ("grass", "jpg"),  # grayscale
    "gravel": ("gravel", "jpg"),  # grayscale
    "text": ("text", "jpg"),  # grayscale
    "clock": ("clock", "jpg"),  # grayscale
    "horse": ("horse", "png"),  # boolean silhouette -> black horse on a transparent background (RGBA)
    "logo": ("logo", "png"),  # RGBA
}


def make_images() -> None:
    import skimage.data
    from PIL import Image

    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    for item_id, (func_name, fmt) in IMAGES.items():
        arr = np.asarray(getattr(skimage.data, func_name)())
        if func_name == "horse":
            # skimage's horse is True on the background, False on the horse
            horse = ~arr.astype(bool)
            rgba = np.zeros(arr.shape + (4,), dtype=np.uint8)
            rgba[..., 3] = np.where(horse, 255, 0)
            arr = rgba
        img = Image.fromarray(arr.astype(np.uint8))
        scale = MAX_SIDE / max(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        out = IMAGE_DIR / f"{item_id}.{fmt}"
        if fmt == "jpg":
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB")
            img.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        else:
            img.save(out, "PNG", optimize=True)
        print(f"{out.relative_to(HERE)}: {img.mode} {img.size[0]}x{img.size[1]}, {out.stat().st_size} bytes")


# --------------------------------------------------------------------------------------------------------------
# Minimal standard MIDI file (format 0) writer
# --------------------------------------------------------------------------------------------------------------

PPQ = 480  # ticks per quarter note
DRUMS = 9  # General MIDI percussion channel (0-based)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


class Song:
    """Collects events at absolute times in beats (quarter notes) and writes a format-0 .mid file."""

    def __init__(self, bpm: float) -> None:
        self.events: list[tuple[int, int, bytes]] = []  # (tick, order, data); note-offs sort before note-ons
        tempo = round(60_000_000 / bpm)
        self.events.append((0, 0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")))

    def program(self, channel: int, program: int, volume: int = 100, pan: int = 64, reverb: int = 40) -> None:
        self.events.append((0, 1, bytes([0xB0 | channel, 7, volume])))
        self.events.append((0, 1, bytes([0xB0 | channel, 10, pan])))
        self.events.append((0, 1, bytes([0xB0 | channel, 91, reverb])))
        self.events.append((0, 1, bytes([0xC0 | channel, program])))

    def note(self, channel: int, start: float, dur: float, pitch: int | list[int], vel: int = 90) -> None:
        for p in [pitch] if isinstance(pitch, int) else pitch:
            on = round(start * PPQ)
            off = max(on + 1, round((start + dur) * PPQ) - 4)
            self.events.append((on, 3, bytes([0x90 | channel, p, vel])))
            self.events.append((off, 2, bytes([0x80 | channel, p, 0])))

    def write(self, path: Path) -> None:
        body = bytearray()
        last = 0
        for tick, _, data in sorted(self.events, key=lambda e: (e[0], e[1])):
            body += _vlq(tick - last) + data
            last = tick
        body += _vlq(PPQ) + b"\xff\x2f\x00"  # end of track one beat after the last event
        header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, PPQ)
        path.write_bytes(header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body))


# note helpers
NOTE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def n(name: str) -> int:
    """'C4' -> 60, 'F#3' -> 54, 'Bb2' -> 46."""
    pitch = NOTE[name[0]]
    rest = name[1:]
    while rest and rest[0] in "#b":
        pitch += 1 if rest[0] == "#" else -1
        rest = rest[1:]
    return pitch + 12 * (int(rest) + 1)


def chord(*names: str) -> list[int]:
    return [n(x) for x in names]


# --------------------------------------------------------------------------------------------------------------
# The ten pieces (all original, written for this project). Each returns (Song, seconds to keep).
# --------------------------------------------------------------------------------------------------------------


def piano_ballad() -> tuple[Song, float]:
    s = Song(bpm=84)
    s.program(0, 0, volume=110, reverb=70)  # acoustic grand piano
    # C - Am - G - C, left-hand broken chords in eighths, right-hand melody
    prog = [("C3", "G3", "C4", "E4"), ("A2", "E3", "A3", "C4"), ("G2", "D3", "G3", "B3")]
    for bar, notes in enumerate(prog):
        pattern = [0, 1, 2, 3, 2, 1, 2, 1]
        for i, k in enumerate(pattern):
            s.note(0, bar * 4 + i * 0.5, 0.9, n(notes[k]), vel=58)
    melody = [
        ("E5", 1.5),
        ("D5", 0.5),
        ("C5", 1),
        ("G4", 1),
        ("A4", 1.5),
        ("B4", 0.5),
        ("C5", 1),
        ("E5", 1),
        ("D5", 2),
        ("B4", 1),
        ("G4", 1),
    ]
    t = 0.0
    for name, d in melody:
        s.note(0, t, d, n(name), vel=84)
        t += d
    s.note(0, 12, 4, chord("C3", "G3", "C4", "E4", "G4", "C5"), vel=70)
    return s, 10.0


def rock_drums_guitar() -> tuple[Song, float]:
    s = Song(bpm=126)
    s.program(1, 30, volume=95, reverb=20)  # distortion guitar
    s.program(2, 33, volume=105, reverb=10)  # electric bass (finger)
    s.program(DRUMS, 0, volume=120, reverb=20)
    riff = [("E2", "B2", "E3"), ("E2", "B2", "E3"), ("G2", "D3", "G3"), ("A2", "E3", "A3")]
    for bar in range(4):
        root = riff[bar]
        for i in range(8):
            s.note(1, bar * 4 + i * 0.5, 0.45, chord(*root), vel=100 if i % 2 == 0 else 85)
            s.note(2, bar * 4 + i * 0.5, 0.45, n(root[0]), vel=100)
        for beat in range(4):
            t = bar * 4 + beat
            s.note(DRUMS, t, 0.25, 36 if beat in (0, 2) else 38, vel=120)
            s.note(DRUMS, t, 0.25, 42, vel=80)
            s.note(DRUMS, t + 0.5, 0.25, 42, vel=70)
        s.note(DRUMS, bar * 4 + 2.5, 0.25, 36, vel=100)
    s.note(DRUMS, 0, 1, 49, vel=115)
    for i, drum in enumerate([38, 38, 45, 45, 43, 43, 41, 41]):  # fill in the last bar
        s.note(DRUMS, 14 + i * 0.25, 0.25, drum, vel=110)
    s.note(DRUMS, 16, 1, [49, 36], vel=120)
    s.note(1, 16, 2, chord("E2", "B2", "E3"), vel=110)
    s.note(2, 16, 2, n("E2"), vel=110)
    return s, 8.5


def jazz_walking_bass() -> tuple[Song, float]:
    s = Song(bpm=132)
    s.program(0, 32, volume=120, reverb=30)  # acoustic bass
    s.program(1, 0, volume=75, reverb=50)  # piano comping
    s.program(DRUMS, 0, volume=90, reverb=30)
    # ii-V-I-VI in F: Gm7 C7 Fmaj7 D7, twice
    walk = ["G2", "A2", "Bb2", "B2", "C3", "E3", "G3", "Gb3", "F3", "C3", "A2", "F#2", "D2", "F#2", "A2", "Ab2"]
    chords_ = [chord("F3", "Bb3", "D4"), chord("E3", "Bb3", "D4"), chord("E3", "A3", "C4"), chord("F#3", "C4", "E4")]
    for rep in range(1):
        off = rep * 16
        for i, name in enumerate(walk):
            s.note(0, off + i, 0.95, n(name), vel=105)
        for bar in range(4):
            t = off + bar * 4
            s.note(1, t + 1.66, 0.3, chords_[bar], vel=62)
            s.note(1, t + 3.66, 0.5, chords_[bar], vel=58)
            for beat in range(4):  # swung ride pattern, hi-hat pedal on 2 and 4
                s.note(DRUMS, t + beat, 0.3, 51, vel=70)
                if beat in (1, 3):
                    s.note(DRUMS, t + beat + 0.66, 0.3, 51, vel=55)
                    s.note(DRUMS, t + beat, 0.3, 44, vel=60)
    s.note(0, 16, 2, n("F2"), vel=105)
    s.note(1, 16, 2, chord("E3", "A3", "C4", "D4"), vel=60)
    s.note(DRUMS, 16, 2, 51, vel=70)
    return s, 8.5


def string_quartet() -> tuple[Song, float]:
    s = Song(bpm=84)
    s.program(0, 40, volume=105, pan=40, reverb=60)  # violin I
    s.program(1, 40, volume=95, pan=56, reverb=60)  # violin II
    s.program(2, 41, volume=95, pan=76, reverb=60)  # viola
    s.program(3, 42, volume=100, pan=90, reverb=60)  # cello
    # four-part chorale in D major, one chord per beat
    v1 = ["F#5", "E5", "D5", "E5", "F#5", "G5", "A5", "G5", "F#5", "E5", "D5"]
    v2 = ["D5", "C#5", "B4", "C#5", "D5", "D5", "E5", "D5", "D5", "C#5", "A4"]
    va = ["A4", "A4", "F#4", "A4", "A4", "B4", "C#5", "B4", "A4", "A4", "F#4"]
    vc = ["D3", "A2", "B2", "A2", "D3", "G2", "A2", "B2", "D3", "A2", "D3"]
    for i in range(len(v1)):
        dur = 1 if i < len(v1) - 1 else 3  # the final chord is held
        for ch, voice, vel in ((0, v1, 88), (1, v2, 74), (2, va, 74), (3, vc, 84)):
            s.note(ch, i, dur, n(voice[i]), vel=vel)
    return s, 9.5


def church_organ() -> tuple[Song, float]:
    s = Song(bpm=84)
    s.program(0, 19, volume=100, reverb=90)  # church organ, manuals
    s.program(1, 19, volume=95, reverb=90)  # church organ, pedal
    # plagal-cadence hymn in G major: G D/F# Em C G/D D G  ... Amen (C G)
    chords_ = [
        ("G3", "B3", "D4", "G4"),
        ("A3", "D4", "F#4", "A4"),
        ("G3", "B3", "E4", "B4"),
        ("G3", "C4", "E4", "C5"),
        ("G3", "B3", "D4", "B4"),
        ("F#3", "A3", "D4", "A4"),
        ("G3", "B3", "D4", "G4"),
        ("G3", "C4", "E4", "G4"),
        ("G3", "B3", "D4", "G4"),
    ]
    bass = ["G2", "F#2", "E2", "C2", "D2", "D2", "G2", "C2", "G1"]
    durs = [1, 1, 1, 1, 1, 1, 2, 2, 3]
    t = 0.0
    for c, b, d in zip(chords_, bass, durs):
        s.note(0, t, d, chord(*c), vel=90)
        s.note(1, t, d, [n(b), n(b) - 12 if n(b) - 12 >= 24 else n(b)], vel=90)
        t += d
    return s, 10.0


def flute_melody() -> tuple[Song, float]:
    s = Song(bpm=126)
    s.program(0, 73, volume=110, reverb=60)  # flute
    s.program(1, 46, volume=80, pan=80, reverb=60)  # orchestral harp
    tune = [
        ("D5", 1),
        ("G5", 0.5),
        ("A5", 0.5),
        ("B5", 1),
        ("A5", 0.5),
        ("G5", 0.5),
        ("E5", 1),
        ("D5", 1),
        ("B4", 1),
        ("D5", 0.5),
        ("E5", 0.5),
        ("G5", 1.5),
        ("F#5", 0.5),
        ("E5", 1),
        ("D5", 1),
        ("E5", 0.5),
        ("G5", 0.5),
        ("A5", 1),
        ("B5", 0.5),
        ("A5", 0.5),
        ("G5", 3),
    ]
    t = 0.0
    for name, d in tune:
        s.note(0, t, d, n(name), vel=92)
        t += d
    harp = [
        ("G2", "D3", "G3", "B3"),
        ("C3", "G3", "C4", "E4"),
        ("E2", "B2", "E3", "G3"),
        ("D2", "A2", "D3", "F#3"),
        ("G2", "D3", "G3", "B3"),
    ]
    for bar, c in enumerate(harp):
        for i, name in enumerate(c + c[::-1][1:3]):
            if bar == 4 and i > 3:
                break
            s.note(1, bar * 4 + i * (4 / 6 if bar < 4 else 0.5), 1.5, n(name), vel=60)
    return s, 10.0


def chiptune_square() -> tuple[Song, float]:
    s = Song(bpm=150)
    s.program(0, 80, volume=90, reverb=5)  # lead 1 (square)
    s.program(1, 80, volume=80, reverb=5)  # square bass
    s.program(2, 81, volume=55, pan=90, reverb=5)  # lead 2 (sawtooth) arpeggio
    lead = [
        "E5",
        "G5",
        "A5",
        "B5",
        "A5",
        "G5",
        "E5",
        "D5",
        "E5",
        "E5",
        "G5",
        "B5",
        "D6",
        "B5",
        "A5",
        "G5",
        "C6",
        "B5",
        "A5",
        "G5",
        "A5",
        "B5",
        "A5",
        "G5",
        "E5",
        "G5",
        "A5",
        "B5",
        "E6",
        "D6",
        "B5",
        "A5",
    ]
    for i, name in enumerate(lead):
        s.note(0, i * 0.5, 0.45, n(name), vel=100)
    roots = ["E2", "C2", "A1", "B1"]
    arps = [("E4", "G4", "B4"), ("C4", "E4", "G4"), ("A3", "C4", "E4"), ("B3", "D#4", "F#4")]
    for bar in range(4):
        for i in range(8):
            s.note(1, bar * 4 + i * 0.5, 0.3, n(roots[bar]) + (12 if i % 2 else 0), vel=95)
        for i in range(16):
            s.note(2, bar * 4 + i * 0.25, 0.2, n(arps[bar][i % 3]), vel=70)
    s.note(0, 16, 1.5, n("E6"), vel=100)
    s.note(1, 16, 1.5, n("E2"), vel=100)
    return s, 7.5


def reggae_skank() -> tuple[Song, float]:
    s = Song(bpm=84)
    s.program(0, 27, volume=90, pan=80, reverb=40)  # clean electric guitar, off-beat skank
    s.program(1, 33, volume=120, reverb=10)  # electric bass
    s.program(2, 17, volume=60, pan=40, reverb=40)  # percussive organ "bubble"
    s.program(DRUMS, 0, volume=100, reverb=30)
    prog = [(("A3", "C4", "E4"), "A1"), (("G3", "B3", "D4"), "G1"), (("F3", "A3", "C4"), "F1")]
    for bar, (c, root) in enumerate(prog):
        t = bar * 4
        for beat in range(4):
            s.note(0, t + beat + 0.5, 0.2, chord(*c), vel=95)  # the skank: short chops on the "and"s
            s.note(2, t + beat + 0.25, 0.15, chord(*c), vel=55)
            s.note(2, t + beat + 0.75, 0.15, chord(*c), vel=50)
            s.note(DRUMS, t + beat, 0.2, 42, vel=60)
            s.note(DRUMS, t + beat + 0.5, 0.2, 42, vel=50)
        s.note(DRUMS, t + 2, 0.3, [36, 37], vel=110)  # one-drop: kick + cross-stick on beat 3
        line = [(0, 0.75, 0), (1, 0.5, 7), (1.5, 0.5, 12), (2.5, 0.5, 7), (3, 0.75, 3)]
        for start, d, interval in line:
            s.note(1, t + start, d, n(root) + 12 + interval, vel=110)
    s.note(0, 12.5, 0.3, chord("A3", "C4", "E4"), vel=95)
    s.note(1, 12, 1.5, n("A2"), vel=110)
    s.note(DRUMS, 12, 0.5, [36, 49], vel=100)
    return s, 9.8


def brass_march() -> tuple[Song, float]:
    s = Song(bpm=126)
    s.program(0, 56, volume=110, pan=50, reverb=40)  # trumpet
    s.program(1, 57, volume=100, pan=70, reverb=40)  # trombone
    s.program(2, 58, volume=110, pan=64, reverb=40)  # tuba
    s.program(DRUMS, 0, volume=100, reverb=40)
    melody = [
        ("F4", 0.75),
        ("F4", 0.25),
        ("Bb4", 1),
        ("D5", 1),
        ("F5", 1),
        ("D5", 0.75),
        ("Bb4", 0.25),
        ("C5", 1),
        ("A4", 1),
        ("F4", 1),
        ("G4", 0.75),
        ("A4", 0.25),
        ("Bb4", 1),
        ("C5", 1),
        ("D5", 1),
        ("C5", 0.75),
        ("Bb4", 0.25),
        ("A4", 1),
        ("C5", 1),
        ("Bb4", 2),
    ]
    t = 0.0
    for name, d in melody:
        s.note(0, t, d, n(name), vel=100)
        t += d
    harmony = [
        ("D4", "F4"),
        ("D4", "F4"),
        ("Eb4", "G4"),
        ("C4", "F4"),
        ("D4", "F4"),
        ("Eb4", "G4"),
        ("C4", "Eb4"),
        ("D4", "F4"),
        ("D4", "F4"),
    ]
    tuba = [
        "Bb1",
        "F2",
        "Bb1",
        "F2",
        "Eb2",
        "Bb2",
        "F2",
        "C2",
        "Bb1",
        "F2",
        "Eb2",
        "Bb1",
        "F2",
        "C2",
        "F2",
        "A1",
        "Bb1",
        "F2",
    ]
    for i, root in enumerate(tuba):  # oom-pah: tuba on the beat, trombone chords off the beat
        s.note(2, i, 0.5, n(root), vel=105)
        s.note(1, i + 0.5, 0.4, chord(*harmony[min(i // 2, len(harmony) - 1)]), vel=80)
    for beat in range(18):
        s.note(DRUMS, beat, 0.2, 36 if beat % 2 == 0 else 38, vel=100 if beat % 2 == 0 else 85)
        if beat % 4 == 3:
            for k in range(4):  # snare ruffle
                s.note(DRUMS, beat + 0.5 + k * 0.125, 0.1, 38, vel=60 + k * 8)
        if beat % 2:
            s.note(DRUMS, beat, 0.3, 49 if beat % 8 == 7 else 57, vel=40)
    s.note(2, 18, 2, n("Bb1"), vel=110)
    s.note(1, 18, 2, chord("D4", "F4"), vel=90)
    s.note(DRUMS, 18, 1, [36, 49], vel=110)
    return s, 10.0


def ambient_pad() -> tuple[Song, float]:
    s = Song(bpm=60)
    s.program(0, 89, volume=100, reverb=110)  # pad 2 (warm)
    s.program(1, 95, volume=70, reverb=110)  # pad 8 (sweep)
    s.program(2, 8, volume=70, pan=90, reverb=120)  # celesta, sparse bell notes
    pads = [("D3", "A3", "E4", "F#4"), ("B2", "F#3", "D4", "A4"), ("G2", "D3", "B3", "F#4")]
    for i, c in enumerate(pads):
        s.note(0, i * 3, 3.2, chord(*c), vel=80)
        s.note(1, i * 3, 3.2, [n(c[0]) - 12], vel=70)
    for t, name in [(0.5, "A5"), (2.0, "F#5"), (3.5, "E5"), (5.0, "D6"), (6.5, "B5"), (8.0, "A5")]:
        s.note(2, t, 2, n(name), vel=55)
    return s, 10.0


PIECES = [
    piano_ballad,
    rock_drums_guitar,
    jazz_walking_bass,
    string_quartet,
    church_organ,
    flute_melody,
    chiptune_square,
    reggae_skank,
    brass_march,
    ambient_pad,
]

# id -> (voice, words per minute, text)
SPEECH = {
    "speech_weather": ("en-us+m3", 165, "Tomorrow will be sunny, with light rain in the evening."),
    "speech_welcome": ("en-us+f4", 175, "Welcome! All books are twenty percent off today."),
    "speech_directions": ("en-gb", 160, "Turn left at the station, then walk straight on."),
}


def _finish(audio: np.ndarray, sr: int, seconds: float | None) -> np.ndarray:
    """Mono, trimmed to `seconds` with a 0.4 s fade-out, peak-normalised to -1 dBFS."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        raise ValueError(f"expected {SAMPLE_RATE} Hz, got {sr}")
    if seconds is not None:
        want = round(seconds * SAMPLE_RATE)
        audio = np.pad(audio[:want], (0, max(0, want - len(audio))))
        fade = round(0.4 * SAMPLE_RATE)
        audio[-fade:] *= np.linspace(1.0, 0.0, fade)
    peak = float(np.max(np.abs(audio)))
    if peak > 0:
        audio = audio * (10 ** (-1 / 20) / peak)
    return audio.astype(np.float32)


def _write_ogg(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    sf.write(path, audio, SAMPLE_RATE, format="OGG", subtype="VORBIS", compression_level=0.55)
    print(f"{path.relative_to(HERE)}: {len(audio) / SAMPLE_RATE:.2f} s, {path.stat().st_size} bytes")


def make_audio() -> None:
    import soundfile as sf

    for tool in ("fluidsynth", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH (Debian: apt-get install fluidsynth timgm6mb-soundfont espeak-ng)")
    if not SOUNDFONT.is_file():
        sys.exit(f"soundfont {SOUNDFONT} not found (Debian: apt-get install timgm6mb-soundfont, or set DUCHO_DEMO_SF2)")
    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        for piece in PIECES:
            song, seconds = piece()
            mid, wav = tmp / f"{piece.__name__}.mid", tmp / f"{piece.__name__}.wav"
            song.write(mid)
            subprocess.run(
                [
                    "fluidsynth",
                    "-ni",
                    "-q",
                    "-g",
                    "0.6",
                    "-r",
                    str(SAMPLE_RATE),
                    "-F",
                    str(wav),
                    str(SOUNDFONT),
                    str(mid),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            audio, sr = sf.read(wav, dtype="float32")
            print(f"{piece.__name__}: rendered {len(audio) / sr:.2f} s, keeping {seconds} s")
            _write_ogg(CLIP_DIR / f"{piece.__name__}.ogg", _finish(audio, sr, seconds))
        for item_id, (voice, wpm, text) in SPEECH.items():
            wav = tmp / f"{item_id}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True)
            audio, sr = sf.read(wav, dtype="float32")
            # add 0.15 s of silence at both ends so the clips do not start/stop abruptly
            pad = np.zeros(round(0.15 * sr), dtype=np.float32)
            _write_ogg(CLIP_DIR / f"{item_id}.ogg", _finish(np.concatenate([pad, audio, pad]), sr, None))


if __name__ == "__main__":
    what = sys.argv[1:] or ["images", "audio"]
    if "images" in what:
        make_images()
    if "audio" in what:
        make_audio()
