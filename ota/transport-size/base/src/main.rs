//! The baseline: what the device's binary links already (tokio, rustls).
mod tls;

#[tokio::main]
async fn main() -> Result<(), tls::Error> {
    tls::dispatch("base", async |_: &[String]| Ok(false)).await
}
