"""Every sample of an example dataset and its splits.json, from the seed alone (pure, no I/O).

How it works:
- **Profiles**: a random UUID4, a skill tier (spread evenly, shuffled) and a dominant hand each;
  profiles are shuffled into train/val/test with the generator's ratios (splits.json).
- **Groups**: each profile plays a few (rudiment, tempo) groups; a group is one performance
  (`perform.py`) with its measure and exercise labels (`labels.py`), shared by its samples.
- **Samples**: one per augmentation preset of the group (random order, so the MIDI-carrying
  first row is not always clean_studio), named with the generator's id rule; the last group is
  cut short so the dataset has exactly the samples asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from .labels import measures, scores
from .perform import Strokes, perform
from .rudiments import cycle

TEMPOS = tuple(range(60, 181, 10))
GROUPS_PER_PROFILE = 2  # small datasets still get several profiles, so every split is filled
SPLIT_RATIOS = (0.70, 0.15, 0.15)  # the generator's train/val/test ratios
DEFAULT_AUGMENTATIONS = 5

TIERS = ("beginner", "intermediate", "advanced", "professional")
TIER_CODES = {"beginner": "beg", "intermediate": "int", "advanced": "adv", "professional": "pro"}
TIER_BINARY = {"beginner": "novice", "intermediate": "novice", "advanced": "skilled",
               "professional": "skilled"}


@dataclass(frozen=True)
class Soundfont:
    """A soundfont's name in the generator and its colour: head tone, tone and wire decays."""

    name: str
    tone_hz: float
    tone_decay_sec: float
    wire_decay_sec: float


SOUNDFONTS = (
    Soundfont("FluidR3_GM", 196.0, 0.09, 0.045),
    Soundfont("GeneralUser_GS", 228.0, 0.07, 0.060),
    Soundfont("MuseScore_General", 181.0, 0.11, 0.035),
)


@dataclass(frozen=True)
class Preset:
    """One of the generator's augmentation presets: its recorded parameters and how it sounds."""

    name: str
    room_type: str
    room_wet_dry: float
    mic_type: str
    mic_distance: float
    compression_ratio: float | None
    noise_level_db: float | None
    rt60_sec: float
    lowpass_hz: float


# The generator's five default presets with its parameters (None = stage disabled there).
PRESETS = (
    Preset("clean_studio", "studio", 0.2, "condenser", 0.4, 3.0, None, 0.3, 18000.0),
    Preset("practice_room", "practice_room", 0.15, "dynamic", 0.5, 4.0, -45.0, 0.4, 16000.0),
    Preset("gym", "gym", 0.35, "dynamic", 2.0, 4.0, -40.0, 1.0, 14000.0),
    Preset("garage", "garage", 0.3, "dynamic", 0.8, 4.0, -35.0, 0.7, 15000.0),
    Preset("marching_field", "outdoor", 0.05, "dynamic", 5.0, None, -35.0, 0.15, 10000.0),
)


@dataclass(frozen=True)
class Profile:
    profile_id: str
    number: int
    tier: str
    dominant_hand: str


@dataclass(frozen=True)
class Group:
    """One performance (profile, rudiment, tempo) and its labels, shared by its samples."""

    profile: Profile
    rudiment: str
    tempo: int
    duration_sec: float
    num_cycles: int
    strokes: Strokes
    measures: dict[str, np.ndarray]
    scores: dict[str, float | None]

    @property
    def group_id(self) -> str:
        return f"{self.profile.profile_id[:8]}_{self.rudiment}_{self.tempo}"


@dataclass(frozen=True)
class Sample:
    number: int
    sample_id: str
    group: Group
    preset: Preset
    soundfont: Soundfont
    audio_path: str
    midi_path: str | None


def _profiles(count: int, rng: np.random.Generator) -> list[Profile]:
    tiers = [TIERS[i % len(TIERS)] for i in range(count)]
    order = rng.permutation(count)
    return [
        Profile(
            profile_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            number=i,
            tier=tiers[order[i]],
            dominant_hand="left" if rng.random() < 0.15 else "right",
        )
        for i in range(count)
    ]


def _splits(profiles: list[Profile], rng: np.random.Generator) -> dict:
    """splits.json: profiles shuffled into train/val/test, none empty once there are 3."""
    ids = [profiles[i].profile_id for i in rng.permutation(len(profiles))]
    n = len(ids)
    n_val = max(1, round(n * SPLIT_RATIOS[1])) if n >= 2 else 0
    n_test = max(1, round(n * SPLIT_RATIOS[2])) if n >= 3 else 0
    n_train = n - n_val - n_test
    parts = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val],
             "test": ids[n_train + n_val:]}
    tier_of = {p.profile_id: p.tier for p in profiles}
    stats: dict = {"total_profiles": n} | {f"{k}_profiles": len(v) for k, v in parts.items()}
    for name, members in parts.items():
        stats[f"{name}_skill_distribution"] = {t: sum(tier_of[m] == t for m in members)
                                               for t in TIERS}
    return {f"{k}_profile_ids": v for k, v in parts.items()} | {"stats": stats}


def sample_id(profile: Profile, rudiment: str, tempo: int, soundfont: str, preset: str) -> str:
    """The generator's id: soundfont cut to 8 characters, underscores dropped from the preset."""
    short = soundfont.replace("_GM_GS", "").replace("_GS", "").replace("_", "").replace("-", "")
    return (f"{TIER_CODES[profile.tier]}{profile.number:03d}_{rudiment}_{tempo}bpm_"
            f"{short[:8].lower()}_{preset.replace('_', '')}")


def _group(number: int, profile: Profile, rudiment: str, tempo: int, augmentations: int,
           duration_range: tuple[float, float], seed: int,
           rng: np.random.Generator) -> tuple[Group, tuple[Preset, ...]]:
    """One performance with its labels, and the presets its samples are rendered with."""
    duration = round(float(rng.uniform(*duration_range)), 3)
    buzz_rng = np.random.default_rng([seed, 2, number])
    num_cycles, strokes = perform(rudiment, tempo, duration, profile.tier,
                                  profile.dominant_hand, rng, buzz_rng)
    presets = tuple(PRESETS[i] for i in rng.permutation(len(PRESETS))[:augmentations])
    group = Group(profile, rudiment, tempo, duration, num_cycles, strokes,
                  measures(strokes, len(cycle(rudiment))), scores(rudiment, strokes, rng))
    return group, presets


def _samples(group: Group, presets: tuple[Preset, ...], first: int, flat: bool) -> list[Sample]:
    """The group's samples, one per preset; only the first carries the group's MIDI."""
    out = []
    for k, preset in enumerate(presets):
        soundfont = SOUNDFONTS[k % len(SOUNDFONTS)]
        sid = sample_id(group.profile, group.rudiment, group.tempo, soundfont.name, preset.name)
        folder = "" if flat else f"{group.rudiment}/"
        out.append(Sample(first + k, sid, group, preset, soundfont, f"audio/{folder}{sid}.flac",
                          f"midi/{folder}{sid}.mid" if k == 0 else None))
    return out


def plan_dataset(samples: int, seed: int, duration_sec: tuple[float, float],
                 rudiments: tuple[str, ...], augmentations: int,
                 flat: bool) -> tuple[list[Sample], dict]:
    """Every sample of the dataset and splits.json, from the seed alone."""
    rng = np.random.default_rng(seed)
    num_groups = -(-samples // augmentations)
    num_profiles = min(num_groups, max(3, -(-num_groups // GROUPS_PER_PROFILE)))
    profiles = _profiles(num_profiles, rng)
    splits = _splits(profiles, rng)
    out: list[Sample] = []
    number = 0
    for profile, block in zip(profiles, np.array_split(np.arange(num_groups), num_profiles)):
        for tempo in rng.choice(TEMPOS, size=len(block), replace=False):
            rudiment = rudiments[number % len(rudiments)]
            group, presets = _group(number, profile, rudiment, int(tempo), augmentations,
                                    duration_sec, seed, rng)
            number += 1
            out += _samples(group, presets[:samples - len(out)], len(out), flat)
    return out, splits
