//! `vardo-backup healthcheck`: the container image's HEALTHCHECK, which has no curl to call.

use std::process::ExitCode;
use std::time::Duration;

/// The `/readyz` URL of the engine listening on `listen`: a wildcard address (`0.0.0.0:8080`,
/// `[::]:8080`) is asked on loopback.
pub fn readyz_url(listen: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| format!("listen is not an address with a port: {listen:?}"))?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    Ok(format!("http://{host}:{}/readyz", addr.port()))
}

/// Exits 0 when `url` answers 200 within five seconds, else 1 with the reason on stderr.
pub async fn healthcheck(url: &str) -> ExitCode {
    // Loopback, straight: never through an HTTP_PROXY set for the targets, never redirected.
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            println!("{url}: {}", resp.status());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            eprintln!("error: {url}: {status} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {url}: {:#}", anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::readyz_url;

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        let url = |listen| readyz_url(listen).ok();
        assert_eq!(
            url("0.0.0.0:8080").as_deref(),
            Some("http://127.0.0.1:8080/readyz")
        );
        assert_eq!(
            url("[::]:9000").as_deref(),
            Some("http://[::1]:9000/readyz")
        );
        assert_eq!(
            url("10.1.2.3:80").as_deref(),
            Some("http://10.1.2.3:80/readyz")
        );
        assert_eq!(url("localhost"), None);
    }
}
