"""Pack the local speech test split for the GPU machine: ``gpu_pack/speech/synth_test`` (FLAC, lossless).

espeak-ng renderings are not bit-reproducible (two fresh runs of ``linmix-speech synth`` give the same mixture IDs,
speakers, sentences and levels but utterances a few samples longer or shorter), so the device cannot regenerate the
exact test audio scored here.  This copies ``data/speech/synth``'s test split (mix_clean, s1, s2 and its metadata CSV,
paths rewritten to .flac) so the device test (``benchmarks/gpu/speech_job.py``) scores the very mixtures that
``benchmarks/gpu/eval_speech.py`` scores on CPU, and the two can be compared utterance by utterance.
FLAC of the 16-bit PCM wavs is lossless: the samples read back are identical (checked below for every file).

    .venv/bin/python benchmarks/gpu/pack_speech.py [--src data/speech/synth] [--out gpu_pack/speech/synth_test]
"""

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default="data/speech/synth")
    p.add_argument("--out", default="gpu_pack/speech/synth_test")
    p.add_argument("--subset", default="test")
    a = p.parse_args(argv)
    src = ROOT / a.src / "Libri2Mix/wav8k/min"
    dst = ROOT / a.out / "Libri2Mix/wav8k/min"
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "metadata").mkdir(parents=True)
    rows = list(csv.reader(open(src / "metadata" / f"mixture_{a.subset}_mix_clean.csv")))
    header, body = rows[0], rows[1:]
    out_rows = [header]
    for row in body:
        new = list(row)
        for j in range(1, len(header) - 1):  # mixture_path, source_k_path
            wav = src / row[j]
            x, sr = sf.read(str(wav), dtype="int16")
            flac = dst / Path(row[j]).with_suffix(".flac")
            flac.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(flac), x, sr, subtype="PCM_16", format="FLAC")
            y, _ = sf.read(str(flac), dtype="int16")
            if not np.array_equal(x, y):
                raise SystemExit(f"FLAC round trip changed {wav}")
            new[j] = str(Path(row[j]).with_suffix(".flac"))
        out_rows.append(new)
    with open(dst / "metadata" / f"mixture_{a.subset}_mix_clean.csv", "w", newline="") as f:
        csv.writer(f).writerows(out_rows)
    shutil.copyfile(src / "metadata" / f"mixture_{a.subset}_mix_clean.csv", ROOT / a.out / "source_metadata.csv")
    size = sum(f.stat().st_size for f in (ROOT / a.out).rglob("*") if f.is_file())
    print(f"packed {len(body)} {a.subset} mixtures ({3 * len(body)} FLAC files) into {a.out}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
