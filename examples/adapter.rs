//! Prints the adapter wgcnn picks (honours WGCNN_BACKEND and WGCNN_ADAPTER).
fn main() {
    match wgcnn::Backend::gpu() {
        Ok(b) => println!("{}", b.describe()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
