package main

// How clients reach the server, in a way that survives a restart on the same --data-dir:
// client certificates from a CA kept in the data folder (the test server's own loopback
// token and certificate are new on every start), a relay on a port that stays the same, and
// an authorization webhook that gives one user read access only, so tests can see what a
// denied write returns.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
)

const (
	// adminUser is in system:masters, which the delegated authorizer allows everything.
	adminUser = "testkit-admin"
	// readOnlyUser may get, list and watch; the webhook denies it every other verb.
	readOnlyUser = "testkit-readonly"
)

// credentials are the client CA and the certificates of the two users, as PEM.
type credentials struct {
	caFile              string
	adminCert, adminKey []byte
	readCert, readKey   []byte
}

// loadOrCreateCredentials reads the credentials from dir, creating them on the first start.
func loadOrCreateCredentials(dir string) (*credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caCertFile, caKeyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(caCertFile); errors.Is(err, os.ErrNotExist) {
		if err := createCredentials(dir); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(caKeyFile); err != nil {
		return nil, err
	}
	creds := &credentials{caFile: caCertFile}
	for _, f := range []struct {
		name string
		into *[]byte
	}{
		{"admin.crt", &creds.adminCert}, {"admin.key", &creds.adminKey},
		{"readonly.crt", &creds.readCert}, {"readonly.key", &creds.readKey},
	} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		*f.into = data
	}
	return creds, nil
}

func createCredentials(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "testkit-client-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	users := []struct {
		file   string
		name   string
		groups []string
	}{
		{"admin", adminUser, []string{"system:masters"}},
		{"readonly", readOnlyUser, nil},
	}
	for i, user := range users {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		template := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: user.name, Organization: user.groups},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, user.file+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writeKey(filepath.Join(dir, user.file+".key"), key); err != nil {
			return err
		}
	}
	if err := writeKey(filepath.Join(dir, "ca.key"), caKey); err != nil {
		return err
	}
	// Written last: its presence says the folder is complete.
	return writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// startAuthorizer serves the SubjectAccessReview webhook the delegated authorizer asks about
// every user outside system:masters, and returns the kubeconfig text that points at it.
func startAuthorizer() (string, func(), error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	server := &http.Server{Handler: http.HandlerFunc(authorize), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = server.Serve(listener) }()
	kubeconfig := fmt.Sprintf(webhookKubeconfig, listener.Addr().String())
	return kubeconfig, func() { _ = server.Close() }, nil
}

func authorize(w http.ResponseWriter, r *http.Request) {
	var review authorizationv1.SubjectAccessReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	verb := ""
	if attrs := review.Spec.ResourceAttributes; attrs != nil {
		verb = attrs.Verb
	}
	// The admin never gets here (system:masters is allowed before the webhook is asked);
	// everyone else, anonymous included, is denied but the read-only user's reads.
	switch {
	case review.Spec.User == readOnlyUser && (verb == "get" || verb == "list" || verb == "watch"):
		review.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: true}
	case review.Spec.User == readOnlyUser:
		review.Status = authorizationv1.SubjectAccessReviewStatus{Reason: "testkit: " + readOnlyUser + " may only read"}
	default:
		review.Status = authorizationv1.SubjectAccessReviewStatus{Reason: "testkit: unknown user"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

const webhookKubeconfig = `
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: http://%s/
  name: webhook
contexts:
- context:
    cluster: webhook
    user: webhook
  name: webhook
current-context: webhook
users:
- name: webhook
`

// relay accepts connections on a fixed loopback address and copies them to the server, so
// the address in the kubeconfig outlives this process: a restarted server takes it over.
type relay struct {
	listener net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startRelay(port int, upstream string) (*relay, error) {
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	r := &relay{listener: listener, conns: map[net.Conn]struct{}{}}
	go r.serve(upstream)
	return r, nil
}

func (r *relay) addr() string { return r.listener.Addr().String() }

func (r *relay) serve(upstream string) {
	for {
		client, err := r.listener.Accept()
		if err != nil {
			return
		}
		go r.pipe(client, upstream)
	}
}

func (r *relay) pipe(client net.Conn, upstream string) {
	server, err := net.Dial("tcp", upstream)
	if err != nil {
		client.Close()
		return
	}
	if !r.track(client, server) {
		return
	}
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go copyHalf(server, client)
	go copyHalf(client, server)
	<-done
	client.Close()
	server.Close()
	r.untrack(client, server)
}

// track records a relayed pair, or closes it when the relay is already closed.
func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

// close stops accepting and cuts every relayed connection, as a server going away would.
func (r *relay) close() {
	r.listener.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
}
