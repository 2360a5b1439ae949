"""What the title lexicon respells on the training split, each product's own title left out (as a
new product's transcript would be respelled): the whole transcript's attribute recall as heard and
respelled, and which words are respelled, with every word eligible and with stop words and chatter
kept as heard (the default). Reads training products only. Usage:

    python benchmarks/lexicon_repairs.py [--dataset data]
"""

import argparse
from collections import Counter
from pathlib import Path

from ampere.asr.candidates import TitleTagger, title_labels
from ampere.asr.keywords import tokens
from ampere.asr.lexicon import TitleLexicon
from ampere.asr.quality import load_attributes, text_recall, truth_attributes
from ampere.data.format import load_items
from ampere.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Settings.resolve().dataset)
    args = parser.parse_args()
    items = load_items(args.dataset, check_media=False)
    labels = title_labels(items)
    tagger = TitleTagger.fit(items)
    said = tagger.stop_words
    truth = load_attributes(args.dataset)
    for name, lexicon in (("every word eligible", TitleLexicon.from_titles(labels.title_words.values())),
                          ("stop words and chatter kept (default)", tagger.lexicon)):
        respelled: Counter[tuple[str, str]] = Counter()
        heard, fixed = [], []
        for product_id, transcripts in labels.transcripts.items():
            attributes = truth_attributes(truth[product_id])
            for transcript in transcripts:
                words = tokens(transcript)
                repaired = lexicon.repair_words(words, labels.title_words[product_id])
                respelled.update((w, r) for w, r in zip(words, repaired, strict=True) if w != r)
                heard.append(text_recall(transcript, attributes))
                fixed.append(text_recall(" ".join(repaired), attributes))
        chatter = sum(n for (word, _), n in respelled.items() if word in said)
        print(f"{name}: attribute recall of the whole transcript {sum(heard) / len(heard):.3f} as heard, "
              f"{sum(fixed) / len(fixed):.3f} respelled; {sum(respelled.values())} respellings, {chatter} of stop "
              f"words or chatter; most frequent: {respelled.most_common(8)}")


if __name__ == "__main__":
    main()
