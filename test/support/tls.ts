import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

/** A self-signed certificate for localhost and 127.0.0.1 (a day long) in `dir`: its files, and its PEM as the CA a client trusts. */
export async function selfSignedCertificate(dir: string): Promise<{ cert: string; key: string; ca: Buffer }> {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await promisify(execFile)(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert],
    { timeout: 30_000 },
  );
  return { cert, key, ca: await readFile(cert) };
}
