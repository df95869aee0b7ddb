package natsauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSOptions of the test deployment's certificates.
type TLSOptions struct {
	// Hosts the server certificate is valid for (DNS names and IPs that
	// clients dial). Default: localhost and 127.0.0.1.
	Hosts []string
	// Validity of the CA and the server certificate, default 1 year.
	Validity time.Duration
	// Skip writes no certificates (bring your own under tls/).
	Skip bool
}

// TLS file names under <dir>/tls.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// ensureTLS writes a CA and a server certificate signed by it, unless
// tls/ already holds a server certificate (created false): certificates
// that an operator placed there, or that an earlier run wrote, are kept.
func ensureTLS(dir string, o TLSOptions) (created bool, err error) {
	if o.Skip {
		return false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, ServerFile)); err == nil {
		return false, nil
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"localhost", "127.0.0.1"}
	}
	if o.Validity <= 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("natsauth tls: %w", err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("natsauth tls: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "megawatch NATS CA", Organization: []string{"megawatch"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(o.Validity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return false, fmt.Errorf("natsauth tls: CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return false, fmt.Errorf("natsauth tls: CA: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("natsauth tls: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: o.Hosts[0], Organization: []string{"megawatch"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(o.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else if h != "" {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, h)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return false, fmt.Errorf("natsauth tls: server certificate: %w", err)
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return false, err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return false, err
	}
	// The server certificate last: its presence means the set is complete.
	for _, f := range []struct {
		name  string
		block *pem.Block
		mode  os.FileMode
	}{
		{CAFile, &pem.Block{Type: "CERTIFICATE", Bytes: caDER}, 0o644},
		{CAKeyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}, 0o600},
		{ServerKeyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER}, 0o600},
		{ServerFile, &pem.Block{Type: "CERTIFICATE", Bytes: srvDER}, 0o644},
	} {
		if err := writeFile(filepath.Join(dir, f.name), pem.EncodeToMemory(f.block), f.mode); err != nil {
			return false, err
		}
	}
	return true, nil
}

// serial is a random 127-bit certificate serial number (crypto/rand.Read
// never fails since Go 1.24).
func serial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b[:])
}
