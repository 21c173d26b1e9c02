package replace

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const importPath = "github.com/harvester/netconf-migrator/migration/replace"

// private are the names through which a backup is found, read, forged or
// given a step without this package: its labels and annotations, the proof
// a create carries, a backup's object name, and the steps.
var private = map[string]string{
	"LabelBackup": LabelBackup, "LabelBackupUID": LabelBackupUID, "AnnotationNAD": AnnotationNAD,
	"AnnotationStep": AnnotationStep, "AnnotationRun": AnnotationRun, "AnnotationMode": AnnotationMode,
	"AnnotationWritten": AnnotationWritten, "AnnotationReplaces": AnnotationReplaces,
	"BackupName": "", "BackupSecretType": string(BackupSecretType),
	"StepDeleting": "", "StepDeleted": "",
}

// allowed are the uses of a private name that read no backup: the backups
// command's help names the Secrets' type.
var allowed = map[string]bool{
	filepath.Join("cmd", "netconf-migrator", "app", "backups.go") + ":BackupSecretType": true,
}

// backupLeaks reports where the Go file f (at rel) reads or writes a
// backup without this package.
func backupLeaks(rel string, f *ast.File) []string {
	var out []string
	name := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == importPath {
			name = "replace"
			if imp.Name != nil {
				name = imp.Name.Name
			}
		}
	}
	if name == "." {
		out = append(out, rel+" dot-imports package replace")
	}
	values := map[string]bool{}
	for _, v := range private {
		if v != "" {
			values[v] = true
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok && name != "" && x.Name == name {
				if _, ok := private[n.Sel.Name]; ok && !allowed[rel+":"+n.Sel.Name] {
					out = append(out, rel+" names replace."+n.Sel.Name)
				}
			}
		case *ast.BasicLit, *ast.BinaryExpr:
			if v, ok := constString(n.(ast.Expr)); ok && values[v] {
				out = append(out, rel+" spells "+strconv.Quote(v))
				return false
			}
		case *ast.AssignStmt:
			for _, lhs := range n.Lhs {
				if s, ok := lhs.(*ast.SelectorExpr); ok && s.Sel.Name == "Step" {
					out = append(out, rel+" sets a .Step")
				}
			}
		case *ast.UnaryExpr:
			if s, ok := n.X.(*ast.SelectorExpr); ok && n.Op == token.AND && s.Sel.Name == "Step" {
				out = append(out, rel+" takes the address of a .Step")
			}
		case *ast.CompositeLit:
			for _, e := range n.Elts {
				if kv, ok := e.(*ast.KeyValueExpr); ok {
					if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Step" {
						if s, ok := n.Type.(*ast.SelectorExpr); ok && s.Sel.Name == "Backup" {
							out = append(out, rel+" writes a Backup with its Step")
						}
					}
				}
			}
		}
		return true
	})
	return out
}

// constString folds a string literal, or a sum of them, to its value.
func constString(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		v, err := strconv.Unquote(e.Value)
		return v, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		a, ok := constString(e.X)
		if !ok {
			return "", false
		}
		b, ok := constString(e.Y)
		return a + b, ok
	case *ast.ParenExpr:
		return constString(e.X)
	}
	return "", false
}

// TestNoOtherPackageReadsOrWritesBackups: the backups of replacements have
// one home, this package (issue 35: they were listed in nine places, and
// what stands under a NAD's name was decided in three). Shipped code
// elsewhere may not name the labels and annotations a backup is found and
// read by, nor the proof a create carries, a backup's object name or type,
// or the steps; nor spell their values (also in pieces), dot-import this
// package, or give a backup a step: it calls Count, OpenBackups, Standing,
// Restore, DropProof and the rest here. What it still cannot see: code
// that lists Secrets by a label spelled at run time, and SecretBackups'
// own API (the one way in, by design). Tests and the stand-ins (test/,
// hack/) may look; the upgrade pre-hook is shell, and lists backups with
// kubectl.
func TestNoOtherPackageReadsOrWritesBackups(t *testing.T) {
	root := filepath.Join("..", "..")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "hack", "test", ".git", filepath.Join("migration", "replace"):
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		for _, leak := range backupLeaks(rel, f) {
			t.Errorf("%s: ask package replace instead", leak)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked: the walk did not start at the repository's root", checked)
	}
}

// TestBackupLeaksAreFound: what the check above finds, and what it lets
// pass (this package's API, used as meant).
func TestBackupLeaksAreFound(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		leak      bool
	}{
		{"the label", `import "` + importPath + `"; var _ = client.HasLabels{replace.LabelBackup}`, true},
		{"an import alias", `import r "` + importPath + `"; var _ = client.HasLabels{r.LabelBackup}`, true},
		{"a dot import", `import . "` + importPath + `"; var _ = client.HasLabels{LabelBackup}`, true},
		{"the Secrets' type", `import "` + importPath + `"; func f() { _ = c.List(ctx, l, client.MatchingFields{"type": string(replace.BackupSecretType)}) }`, true},
		{"a backup's name", `import "` + importPath + `"; func f() { _ = c.Get(ctx, client.ObjectKey{Name: replace.BackupName(uid)}, s) }`, true},
		{"a step in a literal", `import "` + importPath + `"; func f() { j := &replace.Backup{Step: s, Original: o}; _ = js.Save(ctx, j) }`, true},
		{"a step constant", `import "` + importPath + `"; func f() { j.Step2 = replace.StepDeleted }`, true},
		{"a step set", `func f(j *replace.Backup) { j.Step = "Deleted" }`, true},
		{"a step through a pointer", `func f(j *replace.Backup) { p := &j.Step; *p = "Deleted" }`, true},
		{"the label in pieces", `var _ = client.HasLabels{"netconf-migrator.harvesterhci.io/" + "backup"}`, true},
		{"the proof", `import "` + importPath + `"; func f(n *unstructured.Unstructured) { n.SetAnnotations(map[string]string{replace.AnnotationReplaces: "u"}) }`, true},
		{"the API, as meant", `import "` + importPath + `"; func f() { cs, _ := replace.Count(ctx, c, ns, ""); _ = js.Restore(ctx, j); replace.DropProof(a); _ = cs }`, false},
		{"another package's label", `var _ = client.HasLabels{"app.kubernetes.io/name"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parser.ParseFile(token.NewFileSet(), "leak.go", "package p\n"+strings.Replace(tc.src, "; ", "\n", 1), parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			if got := backupLeaks("leak.go", f); (len(got) > 0) != tc.leak {
				t.Errorf("found %q, want a leak: %v", got, tc.leak)
			}
		})
	}
}
