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

// TestNoOtherPackageReadsOrWritesBackups: the backups of replacements have
// one home, this package (issue 35: they were listed in nine places, and
// what stands under a NAD's name was decided in three). Shipped code
// elsewhere may not name the label and annotations a backup is found and
// read by, spell their values, or set a backup's step: it calls Count,
// OpenBackups, Standing, Restore and the rest here. Tests and the stand-ins
// (test/, hack/) may look.
func TestNoOtherPackageReadsOrWritesBackups(t *testing.T) {
	root := filepath.Join("..", "..")
	private := map[string]string{
		"LabelJournal": LabelJournal, "LabelJournalUID": LabelJournalUID, "AnnotationNAD": AnnotationNAD,
		"AnnotationStep": AnnotationStep, "AnnotationRun": AnnotationRun, "AnnotationMode": AnnotationMode, "AnnotationWritten": AnnotationWritten,
	}
	values := map[string]bool{}
	for _, v := range private {
		values[v] = true
	}
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
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "replace" {
					if _, ok := private[n.Sel.Name]; ok {
						t.Errorf("%s names replace.%s: ask package replace instead", rel, n.Sel.Name)
					}
				}
			case *ast.BasicLit:
				if v, err := strconv.Unquote(n.Value); err == nil && values[v] {
					t.Errorf("%s spells %q, a backup's label or annotation: ask package replace instead", rel, v)
				}
			case *ast.AssignStmt:
				for _, lhs := range n.Lhs {
					if s, ok := lhs.(*ast.SelectorExpr); ok && s.Sel.Name == "Step" {
						t.Errorf("%s sets a .Step: a backup's step is package replace's to set", rel)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked: the walk did not start at the repository's root", checked)
	}
}
