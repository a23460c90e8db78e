"""A sample's media: its audio as FLAC bytes, its group's performance as MIDI bytes.

How it works:
- **Hits**: every stroke row sounds once, buzz bounces included (they are rows, see
  `perform.expand_buzz`), at its actual time and velocity, panned a little towards its hand.
- **Dry signal**: each hit is one of a few snare templates (drum-head modes plus a band-limited
  snare-wire burst) in the sample's soundfont colour, summed into a stereo (or mono) buffer.
- **Room**: one pass through the frequency domain applies the preset's room (a decaying
  noise impulse response, partly decorrelated between the two microphones), the microphone's
  roll-off and a pink noise floor; the result is normalised to peak at -1 dBFS. The noise
  floor and wire band-limit are tuned so FLAC files are 60-65% of raw PCM, like the generator's
  recorded drums, not like silence or white noise.
- **MIDI**: type 1, one track, 480 ticks per beat, the performance as played (actual times).
Each sample's audio has its own seed (`[seed, 1, sample number]`), so output is byte-identical
for a seed. Vectorised with numpy FFTs; Python loops only over hits.
"""

from __future__ import annotations

import io

import mido
import numpy as np
import soundfile as sf

from .perform import Strokes
from .plan import Group, Preset, Sample, Soundfont

SAMPLE_RATE = 44100
TAIL_SEC = 0.5  # the generator renders this much decay after the last stroke
PEAK_DBFS = -1.0  # the generator normalises every file to this peak
TICKS_PER_BEAT = 480
SNARE_NOTE = 38  # General MIDI acoustic snare
DRUM_CHANNEL = 9  # General MIDI percussion channel (10, zero-based 9)
NOTE_TICKS = 60  # a drum hit's note_off comes soon after note_on; samplers ignore the length

HIT_FRAMES = 15360  # one rendered hit, 0.35 s (2^10*3*5 keeps its FFT fast); the room adds the rest
TEMPLATES_PER_SAMPLE = 6  # hits cycle through a few variants instead of one frozen sound
WIRE_CUTOFF_HZ = 4000.0  # snare-wire noise rolls off above this (4th order)
# Noise floor levels, tuned with WIRE_CUTOFF_HZ so FLAC files are 60-65% of raw PCM, near the
# generator's: the floor sits this far below the preset's noise level...
NOISE_FLOOR_HEADROOM_DB = 36.0
QUIET_FLOOR_DBFS = -84.0  # ...and presets without degradation still have mic/preamp noise


def flac_bytes(sample: Sample, seed: int, channels: int) -> bytes:
    """The sample's FLAC file: PCM_24 at 44.1 kHz, like the generator's."""
    out = io.BytesIO()
    sf.write(out, render(sample, seed, channels), SAMPLE_RATE, subtype="PCM_24", format="FLAC")
    return out.getvalue()


def midi_bytes(group: Group) -> bytes:
    out = io.BytesIO()
    _midi(group).save(file=out)
    return out.getvalue()


def _hits(strokes: Strokes) -> tuple[np.ndarray, ...]:
    """(time s, amplitude, is right hand) per stroke row: each row sounds once."""
    amps = (strokes["actual_velocity"] / 127.0) ** 1.6
    return strokes["actual_time_ms"] / 1000.0, amps, strokes["hand"] == "R"


def _templates(rng: np.random.Generator, font: Soundfont) -> np.ndarray:
    """A few snare hits: drum-head modes plus a snare-wire noise burst, each slightly different.

    The wires are band-limited like a real snare's (little energy above a few kHz); white
    noise bursts would make FLAC files far larger than the generator's.
    """
    t = np.arange(HIT_FRAMES) / SAMPLE_RATE
    detune = rng.uniform(0.97, 1.03, (TEMPLATES_PER_SAMPLE, 1))
    tone_hz, decay = font.tone_hz, font.tone_decay_sec
    head = (np.sin(2 * np.pi * tone_hz * detune * t) * np.exp(-t / decay)
            + 0.5 * np.sin(2 * np.pi * tone_hz * 1.59 * detune * t) * np.exp(-t / decay / 1.6))
    band = 1.0 / (1.0 + (np.fft.rfftfreq(t.size, 1.0 / SAMPLE_RATE) / WIRE_CUTOFF_HZ) ** 4)
    noise = rng.standard_normal((TEMPLATES_PER_SAMPLE, t.size))
    wires = np.fft.irfft(np.fft.rfft(noise) * band, t.size)
    wires *= np.exp(-t / font.wire_decay_sec) / wires.std()
    attack = np.minimum(1.0, t / 0.0008)
    return (0.8 * head + 0.6 * wires) * attack


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fast on those, and they pad less than 2^k."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())
            p35 *= 3
        p5 *= 5
    return best


def _dry(sample: Sample, frames: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(channels, frames): every hit placed at its time, before the room."""
    times, amps, right = _hits(sample.group.strokes)
    bank = _templates(rng, sample.soundfont)
    pick = rng.integers(0, len(bank), len(times))
    amps = amps * rng.uniform(0.9, 1.1, len(times))
    pan = np.where(right, 0.58, 0.42)  # a stroke sits a little towards the hand that plays it
    gains = np.stack([1.0 - pan, pan]) if channels == 2 else np.ones((1, len(times)))
    delay = int(rng.integers(0, 24))  # the second microphone is a few centimetres further
    dry = np.zeros((channels, frames))
    starts = np.rint(times * SAMPLE_RATE).astype(np.int64)
    for i, start in enumerate(starts):
        for c in range(channels):
            s = start + delay * c
            n = min(bank.shape[1], frames - s)
            if n > 0:
                dry[c, s:s + n] += gains[c, i] * amps[i] * bank[pick[i], :n]
    return dry


def _room(dry: np.ndarray, preset: Preset, rng: np.random.Generator) -> np.ndarray:
    """Room, microphone roll-off and noise floor in one pass through the frequency domain."""
    channels, frames = dry.shape
    ir_len = int(min(preset.rt60_sec, 1.0) * SAMPLE_RATE)
    nfft = _fft_size(frames + ir_len)  # no wrap-around: the room tail past the end is dropped
    t = np.arange(ir_len) / SAMPLE_RATE
    # Mostly one room heard by both microphones, partly decorrelated (a spaced pair).
    diffuse = rng.standard_normal((channels + 1, ir_len))
    ir = (diffuse[:1] + 0.5 * diffuse[1:]) * np.exp(-6.9 * t / preset.rt60_sec)
    ir *= 1.0 / np.sqrt((ir**2).sum(axis=1, keepdims=True))
    freqs = np.fft.rfftfreq(nfft, 1.0 / SAMPLE_RATE)
    mic = 1.0 / (1.0 + (freqs / preset.lowpass_hz) ** 4) * (freqs / np.hypot(freqs, 40.0))
    room = (1.0 - preset.room_wet_dry) + preset.room_wet_dry * 3.0 * np.fft.rfft(ir, nfft)
    spectrum = np.fft.rfft(dry, nfft) * room * mic
    floor_db = (QUIET_FLOOR_DBFS if preset.noise_level_db is None
                else preset.noise_level_db - NOISE_FLOOR_HEADROOM_DB)
    shape = mic / np.sqrt(np.maximum(freqs, 50.0))  # pink, through the same microphone
    rms = np.abs(dry).max() * 10 ** (floor_db / 20)
    shape *= rms * nfft / (2.0 * np.sqrt((shape**2).sum()))
    # Uniform real and imaginary parts (variance 1, and 4x cheaper than normals) still give
    # Gaussian noise in time: every output sample sums the whole spectrum.
    noise = (rng.random((2, channels, shape.size)) - 0.5) * (np.sqrt(12.0) * shape)
    spectrum += noise[0] + 1j * noise[1]
    return np.fft.irfft(spectrum, nfft)[:, :frames]


def render(sample: Sample, seed: int, channels: int) -> np.ndarray:
    """The sample's audio, (frames, channels) float32 peaking at PEAK_DBFS."""
    rng = np.random.default_rng([seed, 1, sample.number])
    frames = int(round((sample.group.duration_sec + TAIL_SEC) * SAMPLE_RATE))
    audio = _room(_dry(sample, frames, channels, rng), sample.preset, rng)
    audio *= 10 ** (PEAK_DBFS / 20) / np.abs(audio).max()
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def _midi(group: Group) -> mido.MidiFile:
    """Type-1 MIDI with one track: the performance as played (actual times and velocities)."""
    beat_ms = 60000.0 / group.tempo
    order = np.argsort(group.strokes["actual_time_ms"], kind="stable")  # rows are not: buzz
    on = np.rint(group.strokes["actual_time_ms"][order] / beat_ms * TICKS_PER_BEAT)
    on, vel = on.astype(np.int64), group.strokes["actual_velocity"][order]
    nxt = np.append(on[1:], on[-1] + NOTE_TICKS)
    off = np.maximum(on + 1, np.minimum(on + NOTE_TICKS, nxt))
    events = sorted([(int(t), 1, i) for i, t in enumerate(on)]
                    + [(int(t), 0, i) for i, t in enumerate(off)])
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(group.tempo))])
    now = 0
    for tick, is_on, i in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=DRUM_CHANNEL, note=SNARE_NOTE,
                                  velocity=int(vel[i]) if is_on else 0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track"))
    return mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=[track])
