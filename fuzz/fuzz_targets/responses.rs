//! Any bytes a server may send as an XML answer: every parser must return
//! an error or a value, never panic, hang or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    bladefs::s3::xml::parse_every_answer(body);
});
