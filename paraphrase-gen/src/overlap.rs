//! The content-word overlap check (`--min-overlap`): a deterministic test that an answer
//! restates its source rather than describing it. Small models asked to "condense and
//! paraphrase" sometimes answer "The passage is condensed and rephrased to provide a concise
//! summary…": fluent, on topic for an instruction, and useless as a training pair. Such
//! answers share almost no content words with the source, while a paraphrase that keeps the
//! passage's named entities and vocabulary (as the default system prompt asks) shares many.
//!
//! Content words: the text split at every character that is not a letter or digit,
//! lowercased, words shorter than 3 characters and English function words (NLTK's stopword
//! list) dropped, and each word cut to its first [`STEM_CHARS`] characters, a crude stem so
//! that "condensed" matches "condense" and "passages" matches "passage".

use std::collections::HashSet;

/// Characters kept of each word.
pub const STEM_CHARS: usize = 6;

/// NLTK's English stopwords of 3 characters or more (shorter words are dropped anyway).
const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "ain",
    "all",
    "and",
    "any",
    "are",
    "aren",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "couldn",
    "did",
    "didn",
    "does",
    "doesn",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "hadn",
    "has",
    "hasn",
    "have",
    "haven",
    "having",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "into",
    "isn",
    "its",
    "itself",
    "just",
    "mightn",
    "more",
    "most",
    "mustn",
    "myself",
    "needn",
    "nor",
    "not",
    "now",
    "off",
    "once",
    "only",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "shan",
    "she",
    "should",
    "shouldn",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "too",
    "under",
    "until",
    "very",
    "was",
    "wasn",
    "were",
    "weren",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "won",
    "wouldn",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The distinct content words of `text` (see the module docs).
pub fn content_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(STEM_CHARS).collect())
        .collect()
}

/// The share, in [0, 1], of the answer's distinct content words that occur in the source; 0
/// for an answer without content words. The share of the answer (not of the source) is used
/// because a condensed paraphrase leaves much of the source out by design.
pub fn overlap(answer: &str, source: &str) -> f64 {
    let answer = content_words(answer);
    if answer.is_empty() {
        return 0.0;
    }
    let source = content_words(source);
    answer.iter().filter(|w| source.contains(*w)).count() as f64 / answer.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "The President's annual message to Congress discussed the tariff, \
        the currency, and relations with Great Britain over the Newfoundland fisheries.";

    #[test]
    fn a_paraphrase_passes_and_a_description_does_not() {
        let paraphrase = "In his yearly address the President told Congress about tariffs, \
            money, and the fisheries dispute with Britain.";
        let description = "The passage is condensed and rephrased to provide a concise \
            overview of the main points.";
        // paraphrase: yearly, addres, presid, told, congre, tariff, money, fisher, disput,
        // britai → 5 of 10 in the source.
        assert_eq!(overlap(paraphrase, SOURCE), 0.5);
        assert_eq!(overlap(description, SOURCE), 0.0);
        assert_eq!(overlap("", SOURCE), 0.0);
        assert_eq!(overlap(SOURCE, SOURCE), 1.0);
    }

    #[test]
    fn words_are_split_lowercased_and_cut() {
        let words = content_words("Übersee-Handel, 1848: the PASSAGES of it");
        let expected: HashSet<String> = ["überse", "handel", "1848", "passag"]
            .map(String::from)
            .into();
        assert_eq!(words, expected);
    }
}
