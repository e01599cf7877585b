fn main() -> std::process::ExitCode {
    seqpipe::cli::main(seqpipe_stages::registry())
}
