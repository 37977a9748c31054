//! request-response codec for the registry protocol: a version byte and postcard, read with a
//! hard size limit so a peer cannot make us buffer more than `max_bytes`.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::registry_query::{RegistryRequest, RegistryResponse};

const VERSION: u8 = 1;

/// The registry codec; `max_bytes` bounds every message read.
#[derive(Clone, Debug)]
pub(crate) struct RegistryCodec {
    pub(crate) max_bytes: usize,
}

async fn read_bounded<T, M>(io: &mut T, max_bytes: usize) -> std::io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned,
{
    let mut buf = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    io.take(limit).read_to_end(&mut buf).await?;
    if buf.len() > max_bytes {
        return Err(invalid(format!("registry message over {max_bytes} bytes")));
    }
    let (&version, body) =
        buf.split_first().ok_or_else(|| invalid("empty registry message".into()))?;
    if version != VERSION {
        return Err(invalid(format!("unsupported registry protocol version {version}")));
    }
    postcard::from_bytes(body).map_err(|e| invalid(format!("malformed registry message: {e}")))
}

async fn write_all<T, M>(io: &mut T, msg: &M, max_bytes: usize) -> std::io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Serialize,
{
    let bytes = postcard::to_extend(msg, vec![VERSION]).map_err(|e| invalid(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(invalid(format!("registry message over {max_bytes} bytes")));
    }
    io.write_all(&bytes).await?;
    io.close().await
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl libp2p::request_response::Codec for RegistryCodec {
    type Protocol = StreamProtocol;
    type Request = RegistryRequest;
    type Response = RegistryResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<RegistryRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_bytes).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<RegistryResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: RegistryRequest,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &req, self.max_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: RegistryResponse,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, &res, self.max_bytes).await
    }
}
