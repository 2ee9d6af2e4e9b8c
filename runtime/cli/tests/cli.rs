//! Golden tests of the `engine` binary: one small case file per behaviour
//! under tests/cmd/, with its arguments, exit status and expected output.
//! Refresh after a reviewed change with `TRYCMD=overwrite cargo test -p engine-cli --test cli`.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.md");
}
