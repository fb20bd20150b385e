package datapath

import "time"

// Progress is what a long step reports while it runs: the activities put it
// in their heartbeat details, where the CLI (drorch status, --wait) and the
// Web UI read it. Its JSON names are part of that contract.
type Progress struct {
	Step        string `json:"step"`
	FilesTotal  int64  `json:"filesTotal,omitempty"`
	FilesDone   int64  `json:"filesDone,omitempty"`
	BytesTotal  int64  `json:"bytesTotal,omitempty"`
	BytesDone   int64  `json:"bytesDone"`
	BytesNew    int64  `json:"bytesNew"`
	ChunksTotal int64  `json:"chunksTotal,omitempty"`
	ChunksDone  int64  `json:"chunksDone"`
	ChunksNew   int64  `json:"chunksNew"`
	// Scanned counts the step's metadata work, which moves no bytes: the
	// objects its listings returned and the entries it read or wrote
	// (repo.WithCounter). A commit of a hundred million entries shows its
	// progress here.
	Scanned int64     `json:"scanned,omitempty"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
}

// Reporter is how the engine tells its caller how far it is: the only way
// it talks to whatever schedules it. Both methods are called from many
// goroutines at once.
type Reporter interface {
	// Update changes the progress; f runs under the reporter's lock.
	Update(f func(*Progress))
	// Resume records details from which a later attempt can continue: the
	// work they describe is durable.
	Resume(details any)
}

// Discard is a Reporter that keeps nothing, for callers that need no
// progress.
type Discard struct{}

// Update implements Reporter.
func (Discard) Update(func(*Progress)) {}

// Resume implements Reporter.
func (Discard) Resume(any) {}
