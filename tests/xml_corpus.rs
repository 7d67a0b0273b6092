//! The fuzzer's corpus (fuzz/corpus/responses) run through every response
//! parser on each test run: the answers of real S3 servers (`*.xml`) whole,
//! cut short at every byte and with each byte replaced, and the inputs
//! `cargo fuzz` kept as interesting (named by hash) as they are. An error
//! or a value, never a panic. `scripts/fuzz` runs the fuzzer itself.

use std::path::Path;

#[test]
fn every_corpus_answer_and_its_mutations_parse_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/responses");
    let mut inputs = 0usize;
    let mut files = 0usize;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        files += 1;
        if path.extension().is_none_or(|e| e != "xml") {
            bladefs::s3::xml::parse_every_answer(&body);
            inputs += 1;
            continue;
        }
        for cut in 0..=body.len() {
            bladefs::s3::xml::parse_every_answer(&body[..cut]);
            inputs += 1;
        }
        let mut mutated = body.clone();
        for i in 0..body.len() {
            for b in [b'<', b'>', b'&', 0xff, b'"', b'/'] {
                mutated[i] = b;
                bladefs::s3::xml::parse_every_answer(&mutated);
                inputs += 1;
            }
            mutated[i] = body[i];
        }
    }
    assert!(files >= 1000, "the corpus is in place ({files} files)");
    eprintln!("{inputs} inputs from {files} corpus files");
}
