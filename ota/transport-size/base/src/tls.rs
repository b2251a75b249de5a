//! What the device's binary links already: a file served and fetched over
//! TLS on TCP with tokio and rustls (ring).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serve `data` to every client on `listen`: `cert` and `key` are DER files.
pub async fn serve(cert: &str, key: &str, listen: &str, data: Vec<u8>) -> Result<(), Error> {
    let cert = CertificateDer::from(std::fs::read(cert)?);
    let key = PrivateKeyDer::try_from(std::fs::read(key)?)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        tls.write_all(&data).await?;
        tls.shutdown().await?;
    }
}

/// Everything `server` (named `name` in its certificate, signed by `ca`) sends.
pub async fn fetch(ca: &str, server: &str, name: &str) -> Result<Vec<u8>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(std::fs::read(ca)?))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server).await?;
    let mut tls = connector.connect(ServerName::try_from(name.to_owned())?, tcp).await?;
    let mut data = Vec::new();
    tls.read_to_end(&mut data).await?;
    Ok(data)
}

/// The program's commands: these two, then `own`'s; the usage otherwise.
pub async fn dispatch(usage: &str, own: impl AsyncFnOnce(&[String]) -> Result<bool, Error>) -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !run(&args).await? && !own(&args).await? {
        eprintln!("usage: {usage} | tls-serve CERT KEY ADDR FILE | tls-fetch CA ADDR NAME OUT");
        std::process::exit(2);
    }
    Ok(())
}

/// `tls-serve CERT KEY ADDR FILE` or `tls-fetch CA ADDR NAME OUT`; false for another command.
async fn run(args: &[String]) -> Result<bool, Error> {
    match args.first().map(String::as_str) {
        Some("tls-serve") if args.len() == 5 => serve(&args[1], &args[2], &args[3], std::fs::read(&args[4])?).await?,
        Some("tls-fetch") if args.len() == 5 => std::fs::write(&args[4], fetch(&args[1], &args[2], &args[3]).await?)?,
        _ => return Ok(false),
    }
    Ok(true)
}
