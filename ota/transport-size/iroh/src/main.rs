//! The baseline and iroh with iroh-blobs on a LAN: no relay, no DNS lookup
//! (presets::Minimal), a persistent store (resume after a restart), a blob
//! served by one device and fetched by another from its address.
#[path = "../../base/src/tls.rs"]
mod tls;

use iroh::endpoint::presets;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, RelayMode};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::{BlobsProtocol, Hash};

#[tokio::main]
async fn main() -> Result<(), tls::Error> {
    tls::dispatch("iroh-size serve STORE FILE | fetch STORE ID HASH ADDR OUT", own).await
}

async fn own(args: &[String]) -> Result<bool, tls::Error> {
    match args {
        // Prints "<endpoint id> <hash> <port>" and serves until interrupted.
        [cmd, store, file] if cmd == "serve" => {
            let store = FsStore::load(store).await?;
            let tag = store.add_path(std::path::absolute(file)?).await?;
            let endpoint = Endpoint::builder(presets::Minimal).relay_mode(RelayMode::Disabled).bind().await?;
            let port = endpoint.bound_sockets().iter().find(|a| a.is_ipv4()).map_or(0, std::net::SocketAddr::port);
            println!("{} {} {port}", endpoint.id(), tag.hash);
            let router = Router::builder(endpoint).accept(iroh_blobs::ALPN, BlobsProtocol::new(&store, None)).spawn();
            tokio::signal::ctrl_c().await?;
            router.shutdown().await?;
        }
        [cmd, store, id, hash, addr, out] if cmd == "fetch" => {
            let store = FsStore::load(store).await?;
            let endpoint = Endpoint::builder(presets::Minimal).relay_mode(RelayMode::Disabled).bind().await?;
            let addr = EndpointAddr::new(id.parse()?).with_ip_addr(addr.parse()?);
            let hash: Hash = hash.parse()?;
            let conn = endpoint.connect(addr, iroh_blobs::ALPN).await?;
            let stats = store.remote().fetch(conn, hash).await?;
            store.export(hash, std::path::absolute(out)?).await?;
            println!("{} bytes", stats.payload_bytes_read);
            endpoint.close().await;
            store.shutdown().await?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
