"""Synthetic speech from espeak-ng through the ``espeakng-loader`` wheel (bundled libespeak-ng + data, no download).

espeak-ng is GPL-3.0: this module only calls the shared library at data-generation time; nothing is bundled into
models or exports.  The library has global state and is not thread-safe, so one ``EspeakSynth`` per process.

API used (espeak-ng ``speak_lib.h``): ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)`` returns the
sample rate (22050 Hz); ``espeak_SetSynthCallback``; ``espeak_SetVoiceByName("en-us+f3")``; ``espeak_SetParameter``
(rate words/min, pitch 0-99, range 0-100); ``espeak_Synth``; ``espeak_Synchronize``.
"""

import ctypes
from typing import Optional

import numpy as np

# Voice names valid for the espeak-ng 1.52 data in the wheel (Debian's "en-gb" is "en" here).
BASE_VOICES = ("en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan")
# Human-sounding variants from voices/!v (robotic/whisper/croak variants left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "adam", "anika", "belinda", "benjamin", "david", "ed",
    "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "michel", "norbert", "paul", "robert", "steph",
    "travis", "victor", "zac",
)  # fmt: skip

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_AUTO = 0
_ESPEAK_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a voice."""


class EspeakSynth:
    """Text -> float32 waveform at ``sample_rate`` (22050 Hz) with a chosen voice, pitch and rate."""

    _instance: Optional["EspeakSynth"] = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - dependency of the package
            raise EspeakError("espeakng-loader is not installed: pip install espeakng-loader") from err
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(data), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}); data path {data!r}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def _collect(wav, n, _events):  # called synchronously from espeak_Synth
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(_collect)  # keep a reference: the C side stores the pointer
        self._lib.espeak_SetSynthCallback(self._cb)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

    @classmethod
    def get(cls) -> "EspeakSynth":
        """The process-wide synthesiser (espeak-ng keeps global state)."""
        if cls._instance is None:
            cls._instance = EspeakSynth()
        return cls._instance

    def synth(
        self, text: str, voice: str = "en-us", pitch: int = 50, rate: int = 175, pitch_range: int = 50
    ) -> np.ndarray:
        """Speak ``text``; voice "lang+variant" (e.g. "en-us+f3"), pitch 0-99, rate words/min.

        Returns float32 mono in [-1, 1] at ``self.sample_rate`` Hz, shape (T,).
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
        self._chunks = []
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        self._lib.espeak_Synth(
            buf, len(buf), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_AUTO | _ESPEAK_ENDPAUSE, None, None
        )
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(self._chunks).astype(np.float32) / 32768.0).clip(-1.0, 1.0)
