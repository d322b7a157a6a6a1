"""One typed configuration schema, with defaults and bounds, used by every component.

Each setting is declared once with ``setting()`` (default, description, bounds). The loader
rejects unknown keys, wrong types and out-of-range values, naming the dotted key and its
YAML line, before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .constants import ALERT_ON_LABEL, ALERT_ON_SUM, SCREAMING, YAMNET_VETO_CLASSES


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is the dotted path, ``line`` the 1-based YAML line."""

    def __init__(self, key: str, message: str, line: int | None = None):
        self.key = key
        self.line = line
        where = f" (line {line})" if line else ""
        super().__init__(f"config key '{key}'{where}: {message}")


def setting(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
            choices: tuple | None = None, fallback: Any = None, follows: str | None = None) -> Any:
    """Declare a field with its default, description and bounds in one place.

    ``fallback`` marks an operating-point setting: its default ``None`` means "the value build-models tuned,
    from the model manifest", and ``fallback`` is used when the manifest has none (an older model set).
    ``follows`` marks an operating-point setting that refines another one: without a value of its own (in
    config.yaml or the manifest) it takes that setting's, and it follows a value config.yaml gives that setting.
    """
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices}
    if fallback is not None:
        meta["fallback"] = fallback
    if follows is not None:
        meta["follows"] = follows
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip()})


@dataclass
class AudioConfig:
    """Microphone capture (`run`) and file replay (`replay`)."""

    device: int | str | None = setting(
        None, "Input device: index, or a substring of its name; null = system default.")
    capture_rate: int | None = setting(
        None, "Capture rate in Hz; null = the device's native rate (resampled to 16 kHz).", lo=8000, hi=192000)
    block_seconds: float = setting(0.1, "Audio delivered per capture callback / replay read.", lo=0.01, hi=1.0)
    queue_seconds: float = setting(
        10.0, "Bounded capture queue; audio older than this is dropped and counted as overflow.", lo=1.0, hi=120.0)
    retry_min_seconds: float = setting(1.0, "First wait before reopening a missing or failed microphone.",
                                       lo=0.1, hi=60)
    retry_max_seconds: float = setting(30.0, "Longest wait between microphone retries (exponential backoff).",
                                       lo=1.0, hi=600)
    no_data_seconds: float = setting(
        3.0, "Close and reopen the microphone when it delivered no audio for this long.", lo=0.5, hi=60.0)
    channels: int | None = setting(
        None, "Channels to open (averaged to mono); null = mono when the device allows it, else all of them.",
        lo=1, hi=32)


@dataclass
class PreprocessConfig:
    """Conditioning shared by training and runtime, so both see identical input."""

    bandwidth_hz: int | None = setting(
        4000, "Band-limit every source to this bandwidth (8 kHz-rate chain) so a model cannot learn "
        "'narrow-band = cry'; null keeps the full 8 kHz band.", lo=3000, hi=8000)
    target_dbfs: float = setting(-20.0, "Each window is normalised to this RMS level before the models.",
                                 lo=-40.0, hi=-6.0)
    max_gain_db: float = setting(30.0, "Loudness normalisation never amplifies by more than this.", lo=0.0, hi=60.0)
    noise_reduction: bool = setting(False, "Spectral-gating noise reduction (training option; off: no gain measured).")
    pitch_normalisation: bool = setting(False, "Pitch normalisation (training option; off: no gain measured).")


@dataclass
class GateConfig:
    """Cheap VAD + energy gate in front of the models."""

    vad_aggressiveness: int = setting(3, "webrtcvad aggressiveness, 0 (lenient) to 3 (strict).", lo=0, hi=3)
    vad_min_fraction: float = setting(
        0.35, "A window passes on VAD when at least this fraction of its 30 ms frames are voiced (and clear "
        "vad_margin_db).", lo=0.0, hi=1.0)
    vad_margin_db: float = setting(
        6.0, "Voiced frames count only this far above the noise floor (webrtcvad calls some steady noise voice).",
        lo=0.0, hi=40.0)
    energy_margin_db: float = setting(
        10.0, "A frame is loud when it is this far above the rolling noise floor.", lo=0.0, hi=40.0)
    energy_min_fraction: float = setting(
        0.1, "A window passes on energy when at least this fraction of its 30 ms frames are loud "
        "(0.1 = 4 frames, ~0.1 s).", lo=0.0, hi=1.0)
    noise_floor_seconds: float = setting(30.0, "History the rolling noise floor is estimated over.", lo=2.0, hi=600.0)
    noise_floor_percentile: float = setting(
        5.0, "Percentile of frame levels taken as the noise floor: low, so a cry never becomes the floor unless it "
        "fills (100 - this)% of the history, and a quieter room is followed within this % of it.", lo=1.0, hi=50.0)
    noise_floor_warmup_seconds: float = setting(
        10.0, "The floor is estimated as if at least this much audio had been heard, the unheard part counting as "
        "quieter than anything: every frame above silence_dbfs passes until the floor is known, and a cry at "
        "stream start does not become the floor.", lo=0.0, hi=600.0)
    silence_dbfs: float = setting(-70.0, "Frames quieter than this (above highpass_hz) never pass, whatever the floor.",
                                  lo=-120.0, hi=-20.0)
    highpass_hz: float = setting(
        150.0, "The gate listens above this frequency (FIR high-pass), so low rumble (wind, traffic, handling) "
        "neither masks a cry (infant cry F0 is 250-600 Hz) nor looks like voice to webrtcvad; 0 = full band.",
        lo=0.0, hi=1000.0)
    hangover_windows: int = setting(2, "Keep passing this many windows after the last one that passed.", lo=0, hi=20)


@dataclass
class WindowConfig:
    """Sliding analysis windows (length fixed by the model contract: 0.975 s)."""

    hop_seconds: float = setting(
        0.5, "Step between live windows: a shorter hop gives a cry more windows to be heard in but runs the models "
        "more often (0.25 s, tuned for it: 1.5 times the CPU, more cries caught but fewer screams and twice the "
        "false alarms in 12 h of test-split household sound; see the README). The operating point is tuned at "
        "this hop: re-run build-models after changing it.",
        lo=0.1, hi=0.975)
    training_hop_seconds: float = setting(
        0.5, "Step between the windows cut from labelled clips for training: windows overlap already at 0.5 s, "
        "and a denser cut would double the training time without adding a new sound.", lo=0.1, hi=0.975)


@dataclass
class ModelsConfig:
    """ONNX models listed in the model manifest."""

    manifest: str | None = setting(
        None, "Model manifest written by `nursery-monitor build-models`; null = models/manifest.json in the "
        "checkout (or $NURSERY_MODELS/manifest.json).")
    threads: int = setting(1, "Intra-op threads per ONNX Runtime session.", lo=1, hi=16)
    use_wav2vec2: bool = setting(True, "Run the Wav2Vec2 classifier (on gated windows).")
    wav2vec2_cascade: bool = setting(
        True, "Run Wav2Vec2 only on windows where it can change the outcome: where YAMNet's alert probability is "
        "so low that even a certain Wav2Vec2 keeps the fused score under fusion.exit_threshold, it is skipped. "
        "Events are identical either way; a quiet or talkative room costs far less CPU.")
    wav2vec2_variant: str = setting("default", "Which Wav2Vec2 file: the manifest's default, or float / int8.",
                                    choices=("default", "float", "int8"))
    carry_below: float = setting(
        0.02, "A gated window reuses the previous window's model outputs instead of running the models when that "
        "window was classified (not itself carried over) with YAMNet's alert probability (Crying + Screaming) "
        "under this, directly before it, and this one is less than carry_max_rise_db louder: the models still hear "
        "every second window of a steady room, and at once one that gets louder. On the tuning streams it saved "
        "31% of YAMNet's calls for the same cries found. 0 = always run the models.", lo=0.0, hi=1.0)
    carry_max_rise_db: float = setting(
        3.0, "How much louder (window level, dB) than the previous window a window may be and still reuse its "
        "outputs (models.carry_below).", lo=0.0, hi=60.0)


FROM_MANIFEST = ("null = the operating point `build-models` tuned for these models on a long household stream "
                 "(models/manifest.json; fusion.false_alarm_budget picks another of its tuned points); a value "
                 "overrides it.")


@dataclass
class FusionConfig:
    """Per-window fusion of the classifiers, then smoothing over time."""

    false_alarm_budget: float | None = setting(
        None, "Sensitivity in one number: the false alarms per hour you will accept on build-models' long household "
        "stream. It takes the operating point tuned for the largest budget up to this (the manifest's "
        "budget_ladder: 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) instead of the default one; lower = fewer false alarms and "
        "more missed cries. null = the default (most recall within 0.1 per hour, stepping up until both labels "
        "reach 75% recall). Keys set below still win.", lo=0.0, hi=1000.0)
    weight_yamnet: float | None = setting(
        None, f"Weight of the YAMNet head in probability averaging. {FROM_MANIFEST}", lo=0.0, hi=1.0, fallback=0.7)
    weight_wav2vec2: float | None = setting(
        None, f"Weight of the Wav2Vec2 classifier in probability averaging. {FROM_MANIFEST}", lo=0.0, hi=1.0,
        fallback=0.3)
    audioset_vote_threshold: float = setting(
        0.2, "YAMNet's AudioSet cry/scream score that makes the third voter vote for that label.", lo=0.0, hi=1.0)
    veto_laughter: float = setting(
        0.05, "A window never alerts while YAMNet's own AudioSet scores hear laughter (Laughter, Baby laughter, "
        "Giggle, ...) at least this strongly and veto_margin times more strongly than any cry or scream: a laughing "
        "baby is Normal, AudioSet learnt laughter from thousands of recordings where the heads heard two, and those "
        "heads call an unfamiliar laugh a cry. 1 = off.", lo=0.0, hi=1.0)
    veto_cat: float = setting(
        0.3, "The same for cat sounds (Cat, Purr, Meow, Hiss, Caterwaul), which the heads confuse with cries; "
        "higher than veto_laughter because AudioSet itself hears some cries as a cat. 1 = off.", lo=0.0, hi=1.0)
    veto_animal: float = setting(
        0.5, "The same for farm and wild animals, fowl and birds (AudioSet's Livestock ... Whale vocalization, not "
        "pets, as AudioSet hears some cries as a dog): a honking or crowing laugh, a rooster in a cartoon. Chosen on "
        "the train/val tuning streams, where it never lowered recall at any false-alarm budget. 1 = off.",
        lo=0.0, hi=1.0)
    veto_margin: float = setting(
        2.0, "How many times its best cry or scream score AudioSet's laughter, cat or animal score must reach to veto.",
        lo=1.0, hi=100.0)
    alert_on: str | None = setting(
        None, f"What makes a window alert. '{ALERT_ON_LABEL}': the fused probability of its likeliest label, which "
        f"must be Crying or Screaming, reaches that label's enter threshold. '{ALERT_ON_SUM}': Crying and Screaming "
        f"together reach the enter threshold of the likelier of the two (models that disagree on cry or scream "
        f"still agree it is an alarm), the vote vetoes only when most voters say Normal, and an open event "
        f"stays alive on both together. {FROM_MANIFEST}", choices=(ALERT_ON_LABEL, ALERT_ON_SUM),
        fallback=ALERT_ON_LABEL)
    require_vote: bool | None = setting(
        None, f"A window counts as alerting only if the majority vote agrees with the average. {FROM_MANIFEST}",
        fallback=True)
    enter_threshold: float | None = setting(
        None, f"Fused probability that makes a window count towards an event. {FROM_MANIFEST}", lo=0.0, hi=1.0,
        fallback=0.55)
    enter_threshold_screaming: float | None = setting(
        None, "Screaming's own enter_threshold: screams are few, brief and easily taken for other loud sounds, so "
        "their best bar differs from the cries'. null = the manifest's; without one there, or when config.yaml "
        "sets enter_threshold, it is enter_threshold.", lo=0.0, hi=1.0, follows="enter_threshold")
    exit_threshold: float | None = setting(
        None, f"Below this a window counts as a miss (hysteresis); never above either enter threshold. "
        f"{FROM_MANIFEST}",
        lo=0.0, hi=1.0, fallback=0.4)
    smooth_windows: int | None = setting(
        None, f"Average each model's probabilities over this many consecutive windows before fusion (1 = off): a "
        f"sustained cry keeps its score, a lone loud window loses it. {FROM_MANIFEST}", lo=1, hi=20, fallback=1)
    k_windows: int | None = setting(
        None, f"Start an event when k of the last n windows are alerting. {FROM_MANIFEST}", lo=1, hi=50, fallback=2)
    n_windows: int | None = setting(None, f"The n of k-of-n. {FROM_MANIFEST}", lo=1, hi=50, fallback=3)
    min_duration_seconds: float | None = setting(
        None, f"Drop events shorter than this (no start is published until reached). {FROM_MANIFEST}",
        lo=0.0, hi=60.0, fallback=0.0)
    hold_seconds: float = setting(3.0, "Keep an event open this long after the last alerting window.", lo=0.0, hi=120.0)
    cooldown_seconds: float = setting(5.0, "After an event of a label ends, wait this long before a new one.",
                                      lo=0.0, hi=600.0)
    one_episode_at_a_time: bool = setting(
        False, "While an event is open, windows of the other alert label keep it alive instead of starting a "
        "second event (a scream that turns into sobbing is one alarm); off by default: on an early benchmark it "
        "cost a third of the screams at >= 10 dB, which then only extended a cry event.")
    update_interval_seconds: float = setting(5.0, "Publish an update this often while an event is active.",
                                             lo=0.5, hi=600.0)
    sustained_seconds: float = setting(
        30.0, "A second way into an alarm, for a cry that lasts but never reaches the enter thresholds: an event "
        "starts when sustained_windows of the windows heard in the last this-many seconds since the last alarm, "
        "the current one included, had Crying + Screaming at sustained_threshold or more and no AudioSet veto, "
        "while no event is open (named after the likelier of the two over them). Chosen on the tuning streams and "
        "30 s crying episodes of val recordings: no false alarm more in 14 h of train/val sound, 3 more of 57 val "
        "episodes caught at >= 10 dB, late (see the README). Not part of the tuned operating point. 0 = off.",
        lo=0.0, hi=300.0)
    sustained_windows: int = setting(
        36, "How many such windows (36 at the 0.5 s hop: 18 s of the 30) start a sustained-cry event.", lo=1, hi=600)
    sustained_threshold: float = setting(
        0.5, "Crying + Screaming (fused, after smoothing) a window needs to count towards a sustained-cry event.",
        lo=0.0, hi=1.0)

    def resolve(self, operating_point: dict[str, Any] | None = None) -> FusionConfig:
        """Every operating-point setting left null filled from ``operating_point`` (the manifest's), else from
        its fallback; explicit values win. Raises ConfigError when the result breaks a cross-field rule."""
        chosen = dict(operating_point or {})
        unknown = sorted(set(chosen) - set(OPERATING_POINT_KEYS))
        if unknown:
            raise ConfigError("fusion", f"the operating point names unknown settings {', '.join(unknown)}")
        hints = typing.get_type_hints(FusionConfig)
        values = {}
        for f in dataclasses.fields(self):
            if f.name in OPERATING_POINT_KEYS and getattr(self, f.name) is None and "fallback" in f.metadata:
                value = chosen.get(f.name, f.metadata["fallback"])
                values[f.name] = _check_scalar(f"fusion.{f.name}", value, hints[f.name], dict(f.metadata))
        for f in dataclasses.fields(self):
            leader = f.metadata.get("follows")
            if leader is not None and getattr(self, f.name) is None:
                own = chosen.get(f.name) if getattr(self, leader) is None else None
                value = own if own is not None else values.get(leader, getattr(self, leader))
                values[f.name] = _check_scalar(f"fusion.{f.name}", value, hints[f.name], dict(f.metadata))
        resolved = dataclasses.replace(self, **values)
        _fusion_rules(resolved)
        return resolved

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in OPERATING_POINT_KEYS)

    def operating_point(self) -> dict[str, Any]:
        """The operating-point settings of a resolved config, as the manifest stores them."""
        return {name: getattr(self, name) for name in OPERATING_POINT_KEYS}

    def veto_thresholds(self) -> dict[str, float]:
        """AudioSet veto category (``YAMNET_VETO_CLASSES``) -> the score that vetoes an alert (``veto_<category>``)."""
        return {name: getattr(self, f"veto_{name}") for name in YAMNET_VETO_CLASSES}

    @property
    def sustained(self) -> bool:
        """The sustained-cry path is on."""
        return self.sustained_seconds > 0

    def enter_threshold_of(self, label: str) -> float:
        """The fused probability at which a window counts towards an event of ``label``."""
        return self.enter_threshold_screaming if label == SCREAMING else self.enter_threshold


OPERATING_POINT_KEYS = tuple(f.name for f in dataclasses.fields(FusionConfig)
                             if "fallback" in f.metadata or "follows" in f.metadata)
"""Fusion settings that `build-models` tunes and writes into the model manifest."""


def require_resolved(fusion: FusionConfig) -> FusionConfig:
    """Decisions need concrete values: a config with operating-point settings still null is a wiring bug."""
    if not fusion.is_resolved:
        missing = [name for name in OPERATING_POINT_KEYS if getattr(fusion, name) is None]
        raise ValueError(f"fusion settings {', '.join(missing)} are unresolved: call FusionConfig.resolve(manifest "
                         "operating point) first")
    return fusion


@dataclass
class TlsConfig:
    """TLS to the broker."""

    enabled: bool = setting(False, "Connect with TLS.")
    ca_file: str | None = setting(None, "CA certificate that signed the broker's certificate.")
    cert_file: str | None = setting(None, "Client certificate (mutual TLS).")
    key_file: str | None = setting(None, "Client key (mutual TLS).")
    insecure: bool = setting(False, "Skip hostname verification (never in production).")


@dataclass
class MqttConfig:
    """Where and how alerts are published."""

    enabled: bool = setting(True, "Publish to MQTT; off = events only printed / written as JSON lines.")
    host: str = setting("localhost", "Broker host name or address.")
    port: int = setting(1883, "Broker port.", lo=1, hi=65535)
    topic_prefix: str = setting("nursery", "Topics are <prefix>/<device_id>/...")
    client_id: str | None = setting(None, "MQTT client id; null = nursery-monitor-<device_id>.")
    username: str | None = setting(None, "Broker user name.")
    password_env: str | None = setting(None, "Environment variable holding the password.")
    password_file: str | None = setting(None, "File holding the password (e.g. a systemd credential).")
    keepalive_seconds: int = setting(30, "MQTT keepalive.", lo=5, hi=3600)
    reconnect_min_seconds: float = setting(1.0, "First reconnect wait.", lo=0.1, hi=60.0)
    reconnect_max_seconds: float = setting(30.0, "Longest reconnect wait (exponential backoff).", lo=1.0, hi=600.0)
    outbox_path: str | None = setting(
        None, "SQLite queue of undelivered events; null = $STATE_DIRECTORY or ./state, file outbox.sqlite.")
    outbox_max_rows: int = setting(
        10000, "Most undelivered messages kept while the broker is away; when full, superseded state messages "
        "go first, then the oldest events, each with a warning.", lo=10, hi=1_000_000)
    discovery: bool = setting(False, "Publish Home Assistant discovery for the crying/screaming binary sensors.")
    discovery_prefix: str = setting("homeassistant", "Home Assistant discovery prefix.")
    tls: TlsConfig = section(TlsConfig)


@dataclass
class HealthConfig:
    """Liveness: systemd watchdog and periodic status."""

    status_interval_seconds: float = setting(60.0, "Publish a status message this often.", lo=1.0, hi=3600.0)
    stall_seconds: float = setting(10.0, "Stop petting the watchdog when no audio was processed for this long.",
                                   lo=1.0, hi=600.0)
    shutdown_seconds: float = setting(2.0, "Time allowed to end events and go offline on SIGTERM.", lo=0.5, hi=30.0)


@dataclass
class ClipsConfig:
    """The sound of each alert, kept to be heard and corrected (`nursery-monitor clips` / `feedback`)."""

    enabled: bool = setting(True, "Save each event's audio as 16 kHz FLAC when it ends (`run`; `replay` only with "
                                  "--save-clips DIR).")
    directory: str | None = setting(None, "Folder of the clips; null = $STATE_DIRECTORY/clips or ./state/clips.")
    pre_roll_seconds: float = setting(2.0, "Audio kept from before the event's first window.", lo=0.0, hi=30.0)
    max_seconds: float = setting(60.0, "Longest clip, pre-roll included; a longer event keeps its beginning.",
                                 lo=1.0, hi=600.0)
    max_total_mb: float = setting(200.0, "Retention: the oldest clips are deleted while all of them take more.",
                                  lo=1.0, hi=100_000.0)
    max_age_days: float = setting(30.0, "Retention: clips older than this are deleted.", lo=0.01, hi=3650.0)
    feedback_directory: str | None = setting(
        None, "User dataset `nursery-monitor feedback` files clips into (<label>/*.flac + feedback.csv), for "
        "`build-models --data`; null = $STATE_DIRECTORY/feedback or ./state/feedback.")
    publish: bool = setting(False, "Also publish each clip's FLAC bytes to <prefix>/<device_id>/clip/<event_id> "
                                   "(QoS 1, not retained).")


@dataclass
class Config:
    """Nursery Monitor configuration."""

    device_id: str = setting("nursery", "Identifies this monitor in topics and events.")
    log_level: str = setting("INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    audio: AudioConfig = section(AudioConfig)
    preprocess: PreprocessConfig = section(PreprocessConfig)
    gate: GateConfig = section(GateConfig)
    window: WindowConfig = section(WindowConfig)
    models: ModelsConfig = section(ModelsConfig)
    fusion: FusionConfig = section(FusionConfig)
    mqtt: MqttConfig = section(MqttConfig)
    health: HealthConfig = section(HealthConfig)
    clips: ClipsConfig = section(ClipsConfig)

    def resolve_path(self, value: str | None) -> Path | None:
        """Relative paths in the config are relative to the config file."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self._base_dir / path)

    _base_dir: Path = field(default=Path("."), repr=False, compare=False, metadata={"internal": True})


def _fusion_rules(f: FusionConfig) -> None:
    """Cross-field rules between fusion settings that are both set (null ones are checked once resolved)."""
    def both(a: str, b: str) -> bool:
        return getattr(f, a) is not None and getattr(f, b) is not None

    for enter in ("enter_threshold", "enter_threshold_screaming"):
        if both("exit_threshold", enter) and f.exit_threshold > getattr(f, enter):
            raise ConfigError("fusion.exit_threshold", f"must not exceed fusion.{enter} ({f.exit_threshold:g} > "
                                                       f"{getattr(f, enter):g}; a null one comes from the model "
                                                       "manifest)")
    if both("k_windows", "n_windows") and f.k_windows > f.n_windows:
        raise ConfigError("fusion.k_windows", f"must not exceed fusion.n_windows ({f.k_windows} > {f.n_windows}; "
                                              "a null one comes from the model manifest)")
    if both("weight_yamnet", "weight_wav2vec2") and f.weight_yamnet + f.weight_wav2vec2 <= 0:
        raise ConfigError("fusion.weight_yamnet", "the two weights must not both be zero")


def _cross_field_rules(cfg: Config) -> None:
    _fusion_rules(cfg.fusion)
    if cfg.audio.retry_min_seconds > cfg.audio.retry_max_seconds:
        raise ConfigError("audio.retry_min_seconds", "must not exceed audio.retry_max_seconds")
    if cfg.mqtt.reconnect_min_seconds > cfg.mqtt.reconnect_max_seconds:
        raise ConfigError("mqtt.reconnect_min_seconds", "must not exceed mqtt.reconnect_max_seconds")
    if cfg.mqtt.password_env and cfg.mqtt.password_file:
        raise ConfigError("mqtt.password_env", "set password_env or password_file, not both")
    if not cfg.device_id or "/" in cfg.device_id or "#" in cfg.device_id or "+" in cfg.device_id:
        raise ConfigError("device_id", "must be non-empty and contain no '/', '#' or '+'")


# --- loading ---------------------------------------------------------------------------------

def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def _check_scalar(key: str, value: Any, annotation: Any, meta: dict) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        if len(options) == 2 and type(None) in options:  # "X or null": X's own message
            return _check_scalar(key, value, next(o for o in options if o is not type(None)), meta)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_scalar(key, value, option, meta)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join(o.__name__ for o in options if o is not type(None))
        raise ConfigError(key, f"expected {names}, got {type(value).__name__} {value!r}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        value = float(value)
    elif annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(key, f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and value < lo or hi is not None and value > hi:
            raise ConfigError(key, f"must be between {lo} and {hi}, got {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str, lines: dict[str, int]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(dotted, f"unknown key (known: {', '.join(sorted(known))})", lines.get(dotted))
        annotation = hints[key]
        try:
            if dataclasses.is_dataclass(annotation):
                kwargs[key] = _build(annotation, value, dotted + ".", lines)
            else:
                kwargs[key] = _check_scalar(dotted, value, annotation, dict(known[key].metadata))
        except ConfigError as exc:
            if exc.line is None:
                exc = ConfigError(exc.key, str(exc).split(": ", 1)[1], lines.get(exc.key))
            raise exc from None
    return cls(**kwargs)


def parse_config(text: str, base_dir: Path = Path(".")) -> Config:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"not valid YAML: {exc}") from None
    lines = _key_lines(node) if node is not None else {}
    cfg = _build(Config, data, "", lines)
    try:
        _cross_field_rules(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.key, str(exc).split(": ", 1)[1], lines.get(exc.key)) from None
    cfg._base_dir = base_dir
    return cfg


def default_config_path() -> str | None:
    """$NURSERY_CONFIG, else ./config.yaml if present, else None (built-in defaults)."""
    env = os.environ.get("NURSERY_CONFIG")
    if env:
        return env
    return "config.yaml" if Path("config.yaml").is_file() else None


def load_config(path: str | os.PathLike | None) -> Config:
    """Load and validate ``path``; no path means all defaults (relative to the working directory)."""
    if path is None:
        return parse_config("", Path.cwd())
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, path.resolve().parent)


def describe(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, description) for every setting of ``obj`` (default: the defaults).

    Feeds the README table, `check-config --defaults` and `check-config`'s effective values.
    """
    obj = Config() if obj is None else obj
    rows = []
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(value, f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows


def default_yaml(cfg: Any = None, indent: str = "") -> str:
    """The whole schema as commented YAML: the shipped config.yaml and `check-config --defaults`."""
    obj = Config() if cfg is None else cfg
    lines = []
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        lines.append(f"{indent}# {f.metadata.get('help', '')}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            lines.append(default_yaml(value, indent + "  ").rstrip("\n"))
        else:
            rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"{indent}{f.name}: {rendered}")
    return "\n".join(lines) + "\n"
